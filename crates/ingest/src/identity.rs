//! Identity stitching (CONTRACT §2): ids linked by login rows, directly or through others, are
//! one person. The person_id of a group is its smallest id (byte order), so it is deterministic
//! for the same set of linked ids and readable in every output.

use std::hash::BuildHasher;
use std::path::Path;

use foldhash::fast::FixedState;
use funnel_core::schema;
use hashbrown::HashTable;

use crate::IngestError;
use crate::store::{IdentityWriter, read_identity};

/// No stored person (an id first seen in this run).
const NONE: u32 = u32::MAX;

/// Union-find over interned ids, compact because it holds every linked id of the store: the
/// ids' bytes in one buffer, a hash table of indexes into it, and per id its parent and stored
/// person as `u32` indexes (about 30 bytes per id, where owned strings took over 100).
#[derive(Default)]
pub(crate) struct Identity {
    /// Every id's bytes, one after another: id `i` is `bytes[ends[i - 1]..ends[i]]`.
    bytes: String,
    ends: Vec<usize>,
    table: HashTable<u32>,
    hasher: FixedState,
    parent: Vec<u32>,
    /// For ids loaded from the store: the person they had before this run (else `NONE`). It
    /// ends with the last id a load interned, so ids interned after it (first met in this run,
    /// which is most of them on a first ingest) need no entry.
    old_person: Vec<u32>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("ids", &self.ends.len())
            .finish()
    }
}

/// Id `i`'s text.
fn name<'a>(bytes: &'a str, ends: &[usize], i: u32) -> &'a str {
    let i = i as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] };
    &bytes[start..ends[i]]
}

impl Identity {
    fn name(&self, i: u32) -> &str {
        name(&self.bytes, &self.ends, i)
    }

    fn lookup(&self, id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.table
            .find(hash, |&j| name(&self.bytes, &self.ends, j) == id)
            .copied()
    }

    fn intern(&mut self, id: &str) -> u32 {
        if let Some(i) = self.lookup(id) {
            return i;
        }
        let i = u32::try_from(self.ends.len())
            .ok()
            .filter(|i| *i < NONE)
            .expect("fewer than 2^32 - 1 linked ids");
        self.bytes.push_str(id);
        self.ends.push(self.bytes.len());
        self.parent.push(i);
        let Identity {
            bytes,
            ends,
            table,
            hasher,
            ..
        } = self;
        let hash = hasher.hash_one(id);
        table.insert_unique(hash, i, |&j| hasher.hash_one(name(bytes, ends, j)));
        i
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = p;
        }
        x
    }

    /// The root of `x`'s group, without shortening paths.
    fn root(&self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            x = self.parent[x as usize];
        }
        x
    }

    /// Joins two groups; the root is the one holding the smaller id, so a root's name is always
    /// the group's person_id.
    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        let (keep, lose) = if self.name(ra) <= self.name(rb) {
            (ra, rb)
        } else {
            (rb, ra)
        };
        self.parent[lose as usize] = keep;
    }

    /// Linked ids held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Bytes of memory the identity holds (its buffers' capacities).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
            + self.ends.capacity() * size_of::<usize>()
            + self.table.capacity() * (size_of::<u32>() + 1)
            + (self.parent.capacity() + self.old_person.capacity()) * size_of::<u32>()
    }

    /// Loads a stored `(id, person_id)` pair.
    pub fn load(&mut self, id: &str, person: &str) {
        let i = self.intern(id);
        let p = self.intern(person);
        let len = self.ends.len();
        self.old_person.resize(len, NONE);
        self.old_person[i as usize] = p;
        self.union(i, p);
    }

    /// Records a login row's link.
    pub fn link(&mut self, user_id: &str, account_id: &str) {
        let a = self.intern(user_id);
        let b = self.intern(account_id);
        self.union(a, b);
    }

    /// The person of an id (the id itself when it was never linked). Read-only, so routing can
    /// ask from several threads; one step per id once [`Identity::settle`] has pointed every id
    /// at its root.
    pub fn person_of<'a>(&'a self, id: &'a str) -> &'a str {
        match self.lookup(id) {
            Some(i) => self.name(self.root(i)),
            None => id,
        }
    }

    /// Points every id at its root (lookups are one step from here on) and gives back the memory
    /// the buffers' growth left spare: no id joins after this.
    pub fn settle(&mut self) {
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.parent.shrink_to_fit();
        self.old_person.shrink_to_fit();
        for i in 0..self.ends.len() as u32 {
            let root = self.find(i);
            self.parent[i as usize] = root;
        }
    }

    /// The persons this run merged into another.
    pub fn merges(&self) -> Merges<'_> {
        let mut pairs: Vec<(u32, u32)> = (0..self.ends.len() as u32)
            .filter_map(|i| {
                let root = self.root(i);
                let old = match self.old_person.get(i as usize) {
                    None | Some(&NONE) => i,
                    Some(&p) => p,
                };
                (self.name(old) != self.name(root)).then_some((old, root))
            })
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        Merges {
            identity: self,
            pairs,
        }
    }

    /// Calls `each(id, person_id)` for every id in a group of two or more ids, in id order.
    pub fn linked_pairs<E>(
        &self,
        mut each: impl FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<(), E> {
        for (i, root) in self.linked() {
            each(self.name(i), self.name(root))?;
        }
        Ok(())
    }

    /// Every id of a group of two or more ids, with its root, in id order.
    fn linked(&self) -> Vec<(u32, u32)> {
        let n = self.ends.len();
        let roots: Vec<u32> = (0..n as u32).map(|i| self.root(i)).collect();
        let mut size = vec![0u32; n];
        for r in &roots {
            size[*r as usize] += 1;
        }
        let mut linked: Vec<(u32, u32)> = (0..n as u32)
            .filter(|&i| size[roots[i as usize] as usize] > 1)
            .map(|i| (i, roots[i as usize]))
            .collect();
        drop(size);
        linked.sort_unstable_by(|a, b| self.name(a.0).cmp(self.name(b.0)));
        linked
    }
}

/// The account a row links its user_id to (CONTRACT §2): a login's account_id. The one rule
/// for which rows link ids, read by dedup (which links them) and by the readers (which gather
/// the ids a run meets).
pub(crate) fn linked_account<'a>(event_type: &str, account_id: Option<&'a str>) -> Option<&'a str> {
    (event_type == schema::LOGIN)
        .then_some(account_id)
        .flatten()
}

/// The hash by which the ids a run meets are recognised in the stored identity ([`RunIds`]).
pub(crate) fn id_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), 0x1d)
}

/// The ids a run meets (every valid row's user_id, every login's account_id), as hashes
/// ([`id_hash`]): the stored identity is loaded for these only, so its memory follows what the
/// run touches, not the whole store. A false match (two ids with one hash) loads one stored
/// link too many, which changes nothing: loading a stored link joins an id to the person it
/// already had. A run that meets more distinct ids than its limit (a re-ingest, a large export)
/// gives up and loads every stored link: the filter would save little and cost a lookup per
/// stored link.
#[derive(Debug)]
pub(crate) struct RunIds {
    hashes: Vec<u64>,
    /// Length after the last sort and dedup.
    compacted: usize,
    limit: usize,
    /// Whether ids are still gathered (false once given up, or when there is nothing to load).
    wanted: bool,
}

impl RunIds {
    /// Ids to gather, at most `limit` distinct ones; none when `wanted` is false.
    pub fn new(wanted: bool, limit: usize) -> RunIds {
        RunIds {
            hashes: Vec::new(),
            compacted: 0,
            limit,
            wanted,
        }
    }

    /// Adds hashes; false once the run has given up (readers may stop hashing).
    pub fn extend(&mut self, hashes: &[u64]) -> bool {
        if self.wanted {
            self.hashes.extend_from_slice(hashes);
            if self.hashes.len() >= 2 * self.compacted + (1 << 20) {
                self.compact();
            }
        }
        self.wanted
    }

    fn compact(&mut self) {
        self.hashes.sort_unstable();
        self.hashes.dedup();
        self.compacted = self.hashes.len();
        if self.compacted > self.limit {
            self.wanted = false;
            self.hashes = Vec::new();
            self.compacted = 0;
        }
    }

    /// The set of hashes met, or `None` when every stored link is to be loaded.
    pub fn finish(mut self) -> Option<hashbrown::HashSet<u64, FixedState>> {
        if self.wanted {
            self.compact();
        }
        self.wanted.then(|| {
            let mut set = hashbrown::HashSet::with_capacity_and_hasher(
                self.hashes.len(),
                FixedState::default(),
            );
            set.extend(self.hashes);
            set
        })
    }
}

impl Identity {
    /// Loads the links of the stored identity file `stored`: those whose id is in `wanted` (by
    /// [`id_hash`]), or all of them with `None`.
    pub fn load_stored(
        &mut self,
        stored: &Path,
        wanted: Option<&hashbrown::HashSet<u64, FixedState>>,
    ) -> Result<(), IngestError> {
        read_identity(stored, |id, person| {
            if wanted.is_none_or(|w| w.contains(&id_hash(id))) {
                self.load(id, person);
            }
            Ok(())
        })
    }

    /// Writes the new generation's identity into `writer`, in id order: every id of a group of
    /// two or more ids held here with its group's person, and every other id of the stored
    /// identity file `stored` (not loaded: the run never met it; `None` when every stored link
    /// was loaded) with its stored person as this run merged it. With every stored link loaded this is exactly [`Identity::linked_pairs`]:
    /// a stored group's person is its smallest id, and it is loaded whenever any of its ids is,
    /// so a group's smallest id is the same whether its untouched ids are held or not.
    pub fn write_with_stored(
        &self,
        merges: &Merges<'_>,
        stored: Option<&Path>,
        writer: &mut IdentityWriter,
    ) -> Result<(), IngestError> {
        let Some(stored) = stored else {
            return self.linked_pairs(|id, person| writer.push(id, person));
        };
        let held = self.linked();
        let mut next = held
            .iter()
            .map(|&(i, root)| (self.name(i), self.name(root)))
            .peekable();
        let mut prev: Option<String> = None;
        read_identity(stored, |id, person| {
            if prev.as_deref().is_some_and(|p| p >= id) {
                return Err(IngestError::damaged(
                    stored,
                    format!("identity ids are not in order at {id:?}"),
                ));
            }
            while let Some((h, p)) = next.next_if(|(h, _)| *h < id) {
                writer.push(h, p)?;
            }
            match next.next_if(|(h, _)| *h == id) {
                Some((h, p)) => writer.push(h, p)?,
                None => writer.push(id, merges.get(person).unwrap_or(person))?,
            }
            match &mut prev {
                Some(p) => {
                    p.clear();
                    p.push_str(id);
                }
                None => prev = Some(id.to_string()),
            }
            Ok(())
        })?;
        for (h, p) in next {
            writer.push(h, p)?;
        }
        Ok(())
    }
}

/// Old person_id -> new person_id for every person a run merged into another: the person an id
/// had before the run (itself when it had none) where its group's root is now another id. Kept
/// as pairs of id indexes (8 bytes each), since a first run over a large export has one for
/// every linked id that is not its group's root.
pub(crate) struct Merges<'a> {
    identity: &'a Identity,
    /// (old person, new person), sorted, no repeats; the old persons are distinct.
    pairs: Vec<(u32, u32)>,
}

impl std::fmt::Debug for Merges<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merges")
            .field("persons", &self.len())
            .finish()
    }
}

impl<'a> Merges<'a> {
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The new person of old person `person`, if it was merged.
    pub fn get(&self, person: &str) -> Option<&'a str> {
        let i = self.identity.lookup(person)?;
        let at = self.pairs.partition_point(|&(old, _)| old < i);
        match self.pairs.get(at) {
            Some(&(old, new)) if old == i => Some(self.identity.name(new)),
            _ => None,
        }
    }

    pub fn contains_key(&self, person: &str) -> bool {
        self.get(person).is_some()
    }

    /// Every (old person, new person).
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.pairs
            .iter()
            .map(|&(old, new)| (self.identity.name(old), self.identity.name(new)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(id: &mut Identity) -> Vec<(String, String)> {
        let mut out = Vec::new();
        id.linked_pairs(|a, b| {
            out.push((a.to_string(), b.to_string()));
            Ok::<(), ()>(())
        })
        .unwrap();
        out
    }

    #[test]
    fn groups_take_their_smallest_id() {
        let mut id = Identity::default();
        id.link("wx_9", "acct_5");
        id.link("dev_7", "acct_5");
        assert_eq!(id.person_of("wx_9"), "acct_5");
        assert_eq!(id.person_of("dev_7"), "acct_5");
        assert_eq!(id.person_of("never_seen"), "never_seen");
        assert_eq!(
            pairs(&mut id),
            vec![
                ("acct_5".into(), "acct_5".into()),
                ("dev_7".into(), "acct_5".into()),
                ("wx_9".into(), "acct_5".into())
            ]
        );
    }

    #[test]
    fn merges_across_runs() {
        // Run 1 stored two persons: {a_2, wx_3} -> a_2 and {b_1, wx_4} -> b_1.
        let mut id = Identity::default();
        for (i, p) in [
            ("a_2", "a_2"),
            ("wx_3", "a_2"),
            ("b_1", "b_1"),
            ("wx_4", "b_1"),
        ] {
            id.load(i, p);
        }
        id.settle();
        assert!(id.merges().is_empty());
        // Run 2 links wx_3 with b_1, and a new id dev_0 with a previously unlinked user u_9.
        id.link("wx_3", "b_1");
        id.link("u_9", "dev_0");
        id.settle();
        let m = id.merges();
        // a_2 sorts before b_1, so the merged person keeps a_2 and b_1's events are re-keyed.
        assert_eq!(m.get("b_1"), Some("a_2"));
        assert_eq!(m.get("u_9"), Some("dev_0"));
        assert_eq!(m.get("a_2"), None);
        assert_eq!(m.get("never_seen"), None);
        assert_eq!(m.len(), 2);
        let all: Vec<(&str, &str)> = m.iter().collect();
        assert!(all.contains(&("b_1", "a_2")) && all.contains(&("u_9", "dev_0")));
        assert_eq!(id.person_of("wx_4"), "a_2");
    }

    #[test]
    fn agrees_with_naive_components() {
        // Pseudo-random edges over 40 ids; compare with repeated relabelling to a fixpoint.
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % 40
        };
        let edges: Vec<(usize, usize)> = (0..30).map(|_| (next(), next())).collect();
        let name = |i: usize| format!("id{i:02}");
        let mut label: Vec<usize> = (0..40).collect();
        loop {
            let mut changed = false;
            for &(a, b) in &edges {
                let m = label[a].min(label[b]);
                if label[a] != m || label[b] != m {
                    label[a] = m;
                    label[b] = m;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut id = Identity::default();
        for &(a, b) in &edges {
            id.link(&name(a), &name(b));
        }
        for (i, l) in label.iter().enumerate() {
            assert_eq!(id.person_of(&name(i)), name(*l));
        }
    }

    #[test]
    fn run_ids_give_up_past_their_limit() {
        let hashes: Vec<u64> = (0..3_000_000u64).map(|i| i % 700_000).collect();
        let mut ids = RunIds::new(true, 800_000);
        assert!(hashes.chunks(8192).all(|c| ids.extend(c)));
        let set = ids.finish().expect("under the limit");
        assert_eq!(set.len(), 700_000);
        assert!(set.contains(&699_999) && !set.contains(&700_000));
        let mut ids = RunIds::new(true, 500_000);
        let kept = hashes.chunks(8192).filter(|c| ids.extend(c)).count();
        assert!(kept < hashes.len() / 8192, "gave up while reading");
        assert!(ids.finish().is_none());
        assert!(RunIds::new(false, 10).finish().is_none());
    }

    /// The identity of a run that loads only the stored links of the ids it meets (the
    /// embedded ingest) against one that loads them all (the slow reference), on random
    /// stores and runs: the same persons for the ids met, the same merges of stored persons,
    /// and the same identity file.
    #[test]
    fn loading_only_the_ids_met_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let (mut held, mut stored) = (0, 0);
        for case in 0..60 {
            let ids = 10 + next(80);
            let name = |i: u64| format!("id{i:03}");
            // Run 1: the stored identity.
            let mut first = Identity::default();
            for _ in 0..next(ids) {
                first.link(&name(next(ids)), &name(next(ids)));
            }
            first.settle();
            let path = dir.path().join(format!("identity-{case}.parquet"));
            let mut w = IdentityWriter::new(path.clone());
            first.linked_pairs(|a, b| w.push(a, b)).unwrap();
            let Some(_) = w.finish().unwrap() else {
                continue;
            };
            // Run 2: links among old and new ids, and ids met without a link.
            let links: Vec<(String, String)> = (0..next(ids / 2 + 1))
                .map(|_| (name(next(ids + 20)), name(next(ids + 20))))
                .collect();
            let mut met: Vec<String> = (0..next(ids)).map(|_| name(next(ids + 20))).collect();
            met.extend(links.iter().flat_map(|(a, b)| [a.clone(), b.clone()]));
            let mut wanted = hashbrown::HashSet::with_hasher(FixedState::default());
            wanted.extend(met.iter().map(|m| id_hash(m)));
            let mut full = Identity::default();
            let mut part = Identity::default();
            full.load_stored(&path, None).unwrap();
            part.load_stored(&path, Some(&wanted)).unwrap();
            for (a, b) in &links {
                full.link(a, b);
                part.link(a, b);
            }
            full.settle();
            part.settle();
            for m in &met {
                assert_eq!(full.person_of(m), part.person_of(m), "case {case}: {m}");
            }
            let (fm, pm) = (full.merges(), part.merges());
            read_identity(&path, |_, person| {
                assert_eq!(fm.get(person), pm.get(person), "case {case}: {person}");
                Ok(())
            })
            .unwrap();
            let written = |identity: &Identity, merges: &Merges<'_>, stored| {
                let out = dir.path().join("out.parquet");
                let mut w = IdentityWriter::new(out.clone());
                identity.write_with_stored(merges, stored, &mut w).unwrap();
                let mut pairs = Vec::new();
                if w.finish().unwrap().is_some() {
                    read_identity(&out, |a, b| {
                        pairs.push((a.to_string(), b.to_string()));
                        Ok(())
                    })
                    .unwrap();
                }
                pairs
            };
            let mut reference = Vec::new();
            full.linked_pairs(|a, b| {
                reference.push((a.to_string(), b.to_string()));
                Ok::<(), ()>(())
            })
            .unwrap();
            // Merging the stored file into an identity that holds every stored link changes
            // nothing either (a run that gave up the filter could be written either way).
            assert_eq!(written(&full, &fm, Some(&path)), reference, "case {case}");
            assert_eq!(written(&part, &pm, Some(&path)), reference, "case {case}");
            assert!(part.len() <= full.len());
            held += part.len();
            stored += full.len();
        }
        assert!(
            held < stored * 9 / 10,
            "{held} of {stored} ids held: the filter loads too much"
        );
    }
}
