//! Which routes can match a path, without testing each: exact paths in a
//! hash map, prefixes in a byte trie, the rest (any path, regex) always.
//! Route numbers are kept in file order in every list, and the lists are
//! merged in order, so the first route whose whole match holds is the one
//! a scan in file order would find.

use nuncio_config::PathMatch;
use rustc_hash::FxHashMap;

use crate::INLINE_CANDIDATES;

/// Candidate routes by path.
#[derive(Debug)]
pub(crate) struct Index {
    exact: FxHashMap<Box<str>, Vec<u32>>,
    prefixes: Trie,
    /// Routes every path is a candidate for (any path, regex).
    always: Vec<u32>,
}

/// A byte trie of prefixes: each node lists the routes whose prefix ends
/// there.
#[derive(Debug)]
struct Trie {
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    /// Children by next byte, sorted.
    edges: Vec<(u8, u32)>,
    routes: Vec<u32>,
}

impl Index {
    /// The index of routes with these path matches, in file order.
    pub(crate) fn new<'a>(paths: impl Iterator<Item = &'a PathMatch>) -> Index {
        let prefixes = Trie { nodes: vec![Node::default()] };
        let mut index = Index { exact: FxHashMap::default(), prefixes, always: Vec::new() };
        for (i, path) in paths.enumerate() {
            let i = u32::try_from(i).expect("fewer than 2^32 routes");
            match path {
                PathMatch::Exact(p) => index.exact.entry(p.as_str().into()).or_default().push(i),
                PathMatch::Prefix(p) => index.prefixes.insert(p.as_bytes(), i),
                PathMatch::Any | PathMatch::Regex(_) => index.always.push(i),
            }
        }
        index
    }

    /// The first candidate route for `path`, in file order, for which
    /// `check` gives something.
    pub(crate) fn first<T>(&self, path: &str, mut check: impl FnMut(usize) -> Option<T>) -> Option<T> {
        let mut candidates = Candidates { inline: [&[]; INLINE_CANDIDATES], count: 0, more: Vec::new() };
        if let Some(list) = self.exact.get(path) {
            candidates.push(list);
        }
        self.prefixes.walk(path.as_bytes(), &mut candidates);
        candidates.push(&self.always);
        let Candidates { mut inline, count, mut more } = candidates;
        let lists: &mut [&[u32]] = if more.is_empty() {
            &mut inline[..count]
        } else {
            more.splice(0..0, inline[..count].iter().copied());
            &mut more
        };
        // A k-way merge by smallest head: k is the number of lists a path
        // has (seldom more than three), and the first candidate usually
        // matches.
        loop {
            let (at, next) = lists
                .iter()
                .enumerate()
                .filter_map(|(at, list)| Some((at, *list.first()?)))
                .min_by_key(|&(_, route)| route)?;
            lists[at] = &lists[at][1..];
            if let Some(found) = check(next as usize) {
                return Some(found);
            }
        }
    }
}

/// The lists of candidate routes for one path (not empty ones).
struct Candidates<'i> {
    inline: [&'i [u32]; INLINE_CANDIDATES],
    count: usize,
    /// All of them, when more than fit inline.
    more: Vec<&'i [u32]>,
}

impl<'i> Candidates<'i> {
    fn push(&mut self, list: &'i [u32]) {
        if list.is_empty() {
            return;
        }
        if self.count < INLINE_CANDIDATES {
            self.inline[self.count] = list;
            self.count += 1;
        } else {
            self.more.push(list);
        }
    }
}

impl Trie {
    fn insert(&mut self, prefix: &[u8], route: u32) {
        let mut node = 0;
        for &byte in prefix {
            node = match self.nodes[node].edges.binary_search_by_key(&byte, |(b, _)| *b) {
                Ok(at) => self.nodes[node].edges[at].1 as usize,
                Err(at) => {
                    let child = self.nodes.len();
                    self.nodes.push(Node::default());
                    let child_id = u32::try_from(child).expect("fewer than 2^32 trie nodes");
                    self.nodes[node].edges.insert(at, (byte, child_id));
                    child
                }
            };
        }
        self.nodes[node].routes.push(route);
    }

    /// Adds the routes of every prefix of `path` to `found`.
    fn walk<'t>(&'t self, path: &[u8], found: &mut Candidates<'t>) {
        let mut node = 0;
        found.push(&self.nodes[0].routes);
        for &byte in path {
            match self.nodes[node].edges.binary_search_by_key(&byte, |(b, _)| *b) {
                Ok(at) => node = self.nodes[node].edges[at].1 as usize,
                Err(_) => return,
            }
            found.push(&self.nodes[node].routes);
        }
    }
}
