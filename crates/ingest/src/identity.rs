//! Identity stitching (CONTRACT §2): ids linked by login rows, directly or through others, are
//! one person. The person_id of a group is its smallest id (byte order), so it is deterministic
//! for the same set of linked ids and readable in every output.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
pub(crate) struct Identity {
    index: HashMap<String, u32>,
    names: Vec<String>,
    parent: Vec<u32>,
    /// For ids loaded from the store: the person they had before this run.
    old_person: HashMap<u32, String>,
}

impl Identity {
    fn intern(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(id.to_string());
        self.parent.push(i);
        self.index.insert(id.to_string(), i);
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

    /// Joins two groups; the root is the one holding the smaller id, so a root's name is always
    /// the group's person_id.
    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        let (keep, lose) = if self.names[ra as usize] <= self.names[rb as usize] {
            (ra, rb)
        } else {
            (rb, ra)
        };
        self.parent[lose as usize] = keep;
    }

    /// Loads a stored `(id, person_id)` pair.
    pub fn load(&mut self, id: &str, person: &str) {
        let i = self.intern(id);
        let p = self.intern(person);
        self.old_person.insert(i, person.to_string());
        self.union(i, p);
    }

    /// Records a login row's link.
    pub fn link(&mut self, user_id: &str, account_id: &str) {
        let a = self.intern(user_id);
        let b = self.intern(account_id);
        self.union(a, b);
    }

    /// The person of an id (the id itself when it was never linked).
    pub fn person_of(&mut self, id: &str) -> String {
        match self.index.get(id) {
            Some(&i) => {
                let r = self.find(i);
                self.names[r as usize].clone()
            }
            None => id.to_string(),
        }
    }

    /// Old person_id -> new person_id for every person this run merged into another.
    pub fn merges(&mut self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for i in 0..self.names.len() as u32 {
            let root = self.find(i);
            let new = &self.names[root as usize];
            let old = self.old_person.get(&i).unwrap_or(&self.names[i as usize]);
            if old != new {
                out.insert(old.clone(), new.clone());
            }
        }
        out
    }

    /// `(id, person_id)` for every id in a group of two or more ids, sorted by id.
    pub fn linked_pairs(&mut self) -> Vec<(String, String)> {
        let mut size: HashMap<u32, u32> = HashMap::new();
        for i in 0..self.names.len() as u32 {
            let r = self.find(i);
            *size.entry(r).or_default() += 1;
        }
        let mut out = Vec::new();
        for i in 0..self.names.len() as u32 {
            let r = self.find(i);
            if size[&r] > 1 {
                out.push((
                    self.names[i as usize].clone(),
                    self.names[r as usize].clone(),
                ));
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_take_their_smallest_id() {
        let mut id = Identity::default();
        id.link("wx_9", "acct_5");
        id.link("dev_7", "acct_5");
        assert_eq!(id.person_of("wx_9"), "acct_5");
        assert_eq!(id.person_of("dev_7"), "acct_5");
        assert_eq!(id.person_of("never_seen"), "never_seen");
        assert_eq!(
            id.linked_pairs(),
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
        assert!(id.merges().is_empty());
        // Run 2 links wx_3 with b_1, and a new id dev_0 with a previously unlinked user u_9.
        id.link("wx_3", "b_1");
        id.link("u_9", "dev_0");
        let m = id.merges();
        // a_2 sorts before b_1, so the merged person keeps a_2 and b_1's events are re-keyed.
        assert_eq!(m.get("b_1").map(String::as_str), Some("a_2"));
        assert_eq!(m.get("u_9").map(String::as_str), Some("dev_0"));
        assert_eq!(m.len(), 2);
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
