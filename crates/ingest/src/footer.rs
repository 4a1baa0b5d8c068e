//! What a Parquet footer must satisfy before the parquet crate reads the file: a damaged or
//! hostile footer with a negative column-chunk offset or size makes the crate panic (an
//! `assert!` in `ColumnChunkMetaData::byte_range`, found by fuzzing), so every Parquet file
//! ingest opens, input or store, is checked here first.

use parquet::file::metadata::ParquetMetaData;

/// `Err` naming the first column chunk whose offsets or size are negative.
pub(crate) fn check(meta: &ParquetMetaData) -> Result<(), String> {
    for (g, group) in meta.row_groups().iter().enumerate() {
        for (c, chunk) in group.columns().iter().enumerate() {
            let offsets = [
                chunk.data_page_offset(),
                chunk.dictionary_page_offset().unwrap_or(0),
                chunk.compressed_size(),
            ];
            if offsets.iter().any(|&v| v < 0) {
                return Err(format!(
                    "damaged Parquet footer: column chunk {c} of row group {g} has a negative offset or size"
                ));
            }
        }
    }
    Ok(())
}
