//! Identity stitching (CONTRACT §2): ids linked by login rows, directly or through others, are
//! one person. The person_id of a group is its smallest id (byte order), so it is deterministic
//! for the same set of linked ids and readable in every output.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;

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
    /// For ids loaded from the store: the person they had before this run (else `NONE`). Ids
    /// are loaded before any is linked, so the ids first met in this run, which come after, need
    /// no entry: the vector ends with the last loaded id.
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

    /// Points every id at its root (lookups are one step from here on) and returns the memory
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

    /// The persons this run merged into another (after [`Identity::settle`]).
    pub fn merges(&self) -> Merges<'_> {
        let mut pairs: Vec<(u32, u32)> = (0..self.ends.len() as u32)
            .filter_map(|i| {
                let root = self.parent[i as usize];
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
        let n = self.ends.len();
        let roots: Vec<u32> = (0..n as u32).map(|i| self.root(i)).collect();
        let mut size = vec![0u32; n];
        for r in &roots {
            size[*r as usize] += 1;
        }
        let mut linked: Vec<u32> = (0..n as u32)
            .filter(|&i| size[roots[i as usize] as usize] > 1)
            .collect();
        drop(size);
        linked.sort_unstable_by(|a, b| self.name(*a).cmp(self.name(*b)));
        for i in linked {
            each(self.name(i), self.name(roots[i as usize]))?;
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
}
