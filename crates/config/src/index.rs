//! Where each field path sits in the YAML text.
//!
//! serde gives values without positions, so semantic errors are located by
//! walking `saphyr-parser`'s event stream once and recording, for every
//! field path (`listeners[0].routes[2].timeout`), the position of its value
//! and of its key. The path format is the one `serde_path_to_error` prints
//! and the one the validator builds.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span};

/// A 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Pos {
    pub(crate) const START: Pos = Pos { line: 1, column: 1 };

    fn of(span: &Span) -> Pos {
        Pos { line: span.start.line(), column: span.start.col() + 1 }
    }
}

/// A YAML syntax error found while indexing.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub(crate) pos: Pos,
    /// Innermost field path around the error ("" at the top).
    pub(crate) path: String,
    pub(crate) message: String,
}

/// Field path → position of its value and of its key.
#[derive(Debug, Default)]
pub(crate) struct Index {
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
    /// Second occurrence of a key given twice in one mapping.
    duplicate_keys: HashMap<String, Pos>,
}

enum MapState {
    /// The next node is a key.
    Key,
    /// The next node is the value of this path (`None`: not addressable,
    /// e.g. the value of a non-scalar key).
    Value(Option<String>),
}

enum Frame {
    Map { path: Option<String>, state: MapState },
    Seq { path: Option<String>, next: usize },
}

impl Frame {
    fn path(&self) -> Option<&str> {
        match self {
            Frame::Map { path, .. } | Frame::Seq { path, .. } => path.as_deref(),
        }
    }
}

/// `parent.key`, or `key` at the top.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

impl Index {
    /// Indexes `text`, or returns its first syntax error.
    pub(crate) fn build(text: &str) -> Result<Index, SyntaxError> {
        let mut index = Index::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut documents = 0usize;
        for event in Parser::new_from_str(text) {
            let (event, span) = event.map_err(|e| SyntaxError {
                pos: Pos { line: e.marker().line(), column: e.marker().col() + 1 },
                path: stack.iter().rev().find_map(Frame::path).unwrap_or("").to_owned(),
                message: e.info().to_owned(),
            })?;
            let pos = Pos::of(&span);
            let is_node = matches!(
                event,
                Event::Scalar(..) | Event::Alias(..) | Event::SequenceStart(..) | Event::MappingStart(..)
            );
            match event {
                Event::DocumentStart(_) => documents += 1,
                Event::SequenceEnd | Event::MappingEnd => {
                    stack.pop();
                }
                _ => {}
            }
            if !is_node || documents > 1 {
                continue;
            }
            // Where does this node sit: a key, or a value at some path?
            let node_path = match stack.last_mut() {
                None => Some(String::new()),
                Some(Frame::Seq { path, next }) => {
                    let p = path.as_ref().map(|p| format!("{p}[{next}]"));
                    *next += 1;
                    p
                }
                Some(Frame::Map { path, state }) => match state {
                    MapState::Key => {
                        let child = match (&event, path.as_deref()) {
                            (Event::Scalar(key, ..), Some(parent)) => {
                                let child = join(parent, key);
                                if index.keys.contains_key(&child) {
                                    index.duplicate_keys.entry(child.clone()).or_insert(pos);
                                } else {
                                    index.keys.insert(child.clone(), pos);
                                }
                                Some(child)
                            }
                            _ => None,
                        };
                        *state = MapState::Value(child);
                        // A non-scalar key: descend into it, addressable by nothing.
                        match event {
                            Event::SequenceStart(..) => stack.push(Frame::Seq { path: None, next: 0 }),
                            Event::MappingStart(..) => stack.push(Frame::Map { path: None, state: MapState::Key }),
                            _ => {}
                        }
                        continue;
                    }
                    MapState::Value(p) => {
                        let p = p.take();
                        *state = MapState::Key;
                        p
                    }
                },
            };
            if let Some(p) = &node_path {
                index.values.entry(p.clone()).or_insert(pos);
            }
            match event {
                Event::SequenceStart(..) => stack.push(Frame::Seq { path: node_path, next: 0 }),
                Event::MappingStart(..) => stack.push(Frame::Map { path: node_path, state: MapState::Key }),
                _ => {}
            }
        }
        Ok(index)
    }

    /// Whether the document has a top-level node at all (not only comments).
    pub(crate) fn has_root(&self) -> bool {
        self.values.contains_key("")
    }

    /// Position of the value at `path`, or of its nearest ancestor that has
    /// one (a default-filled or aliased field has none of its own).
    pub(crate) fn value(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p) {
                return *pos;
            }
            if p.is_empty() {
                return Pos::START;
            }
            p = parent(p);
        }
    }

    /// Position of the key of `path` (falls back to [`Index::value`]).
    pub(crate) fn key(&self, path: &str) -> Pos {
        self.keys.get(path).copied().unwrap_or_else(|| self.value(path))
    }

    /// Position of the second occurrence of the key of `path`, if given twice.
    pub(crate) fn duplicate_key(&self, path: &str) -> Option<Pos> {
        self.duplicate_keys.get(path).copied()
    }

    /// Position of the value at `path` itself, if it is in the text (no
    /// fallback to an ancestor).
    pub(crate) fn get(&self, path: &str) -> Option<Pos> {
        self.values.get(path).copied()
    }

    /// Position of the key of `path` itself, if it is in the text (no
    /// fallback).
    pub(crate) fn get_key(&self, path: &str) -> Option<Pos> {
        self.keys.get(path).copied()
    }

    /// Line of the value at `path` if it is in the text.
    pub(crate) fn line(&self, path: &str) -> Option<usize> {
        self.values.get(path).map(|p| p.line)
    }
}

/// `a.b[0].c` → `a.b[0]` → `a.b` → `a` → ``.
pub(crate) fn parent(path: &str) -> &str {
    if path.ends_with(']')
        && let Some(i) = path.rfind('[')
    {
        return &path[..i];
    }
    match path.rfind('.') {
        Some(i) => &path[..i],
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_block_and_flow_nodes() {
        let text = "a:\n  b: [x, {c: 1}]\n  d:\n    - e: 2\n      f: 3\n";
        let index = Index::build(text).unwrap();
        assert_eq!(index.value("a"), Pos { line: 2, column: 3 });
        assert_eq!(index.key("a.b"), Pos { line: 2, column: 3 });
        assert_eq!(index.value("a.b"), Pos { line: 2, column: 6 });
        assert_eq!(index.value("a.b[0]"), Pos { line: 2, column: 7 });
        assert_eq!(index.value("a.b[1].c"), Pos { line: 2, column: 14 });
        assert_eq!(index.value("a.d[0].e"), Pos { line: 4, column: 10 });
        assert_eq!(index.value("a.d[0].f"), Pos { line: 5, column: 10 });
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(index.value("a.d[0].zzz"), Pos { line: 4, column: 7 });
    }

    #[test]
    fn parents() {
        assert_eq!(parent("a.b[0].c"), "a.b[0]");
        assert_eq!(parent("a.b[0]"), "a.b");
        assert_eq!(parent("a"), "");
    }

    #[test]
    fn syntax_error_has_position() {
        let err = Index::build("a:\n  b: [1, 2\n").unwrap_err();
        assert!(err.pos.line >= 2, "{err:?}");
        assert_eq!(err.path, "a.b");
    }
}
