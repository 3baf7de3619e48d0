//! The module graph of a crate has no cycles.
//!
//! The checker reads a crate's `src/` as text, starting at `lib.rs`, follows `mod NAME;`
//! declarations to their files (`NAME.rs` or `NAME/mod.rs`, or a `#[path]`), and records which
//! module refers to which through:
//!
//! - `use` declarations, with nested groups flattened (`use crate::a::{b::C, d::{self, E}}`
//!   refers to `a::b` and `a::d`), and relative `use` paths that start with a child module
//!   (`pub use parser::parse` in `syntax/mod.rs`);
//! - paths anywhere in the code: `crate::a::b::f()`, `super::x::Y`, `self::x::Y`, and paths
//!   whose first segment is a child module (`lexer::lex(..)`).
//!
//! Granularity: every module is a node, a file or an inline `mod NAME { ... }` alike, named by
//! its path from the crate root (`syntax::parser`). A path counts as a reference to the deepest
//! module it names (`crate::syntax::ast::Span` refers to `syntax::ast`, not to `syntax`). A
//! module's reference to one of its own ancestors (`super::Ctx` in `check::names`, an item
//! re-exported at the crate root) is **not** an edge: a submodule is part of its parent, and
//! its parent declaring and using it is the ordinary shape of a module tree, not a cycle.
//! Everything else is, so `syntax::errors` using `syntax::parser` while `syntax::parser` uses
//! `syntax::errors` is a cycle, and so is a longer loop through modules in different parents.
//!
//! Not read: bodies of `#[cfg(test)]` modules (unit tests may reach anywhere), paths inside
//! macro definitions and `quote!`-style token lists are read like code (they rarely name
//! `crate::`), `$crate` and `::name` paths are ignored.
//!
//! A failure spells out one cycle of every group of mutually dependent modules (strongly
//! connected component), with the file and line of the reference behind every edge, e.g.
//!
//! ```text
//! syntax::errors
//!     -> syntax::parser   (nanovm-dsl/src/syntax/errors.rs:20: `crate::syntax::parser::NvmParser`)
//!     -> syntax::errors   (nanovm-dsl/src/syntax/parser.rs:24: `crate::syntax::errors`)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// One module (keyed by its path from the crate root, empty for the root): where its text is.
#[derive(Debug)]
struct Module {
    /// The file the module's text is in.
    file: PathBuf,
}

/// A reference from one module to another: where it was seen, and the path as written.
#[derive(Clone, Debug)]
struct Reference {
    file: PathBuf,
    line: usize,
    path: String,
}

/// A crate's modules and the references between them.
#[derive(Debug, Default)]
struct ModuleGraph {
    modules: BTreeMap<Vec<String>, Module>,
    /// `from -> to -> first reference seen`.
    edges: BTreeMap<Vec<String>, BTreeMap<Vec<String>, Reference>>,
}

/// Where a source text comes from: real files, or a map of inline sources for the unit tests.
trait Sources {
    fn read(&self, path: &Path) -> Option<String>;
}

/// Files under a base directory; paths in reports stay relative to it.
struct Files(PathBuf);

impl Sources for Files {
    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(self.0.join(path)).ok()
    }
}

impl Sources for BTreeMap<PathBuf, String> {
    fn read(&self, path: &Path) -> Option<String> {
        self.get(path).cloned()
    }
}

/// A path found in the code, before resolution: its segments and whether it starts at the
/// crate root, at `super` (how many), at `self`, or at a plain name.
#[derive(Debug)]
struct RawPath {
    segments: Vec<String>,
    line: usize,
}

/// The modules and paths of one module's tokens.
#[derive(Default)]
struct Scan {
    /// `mod NAME;` declarations: name and optional `#[path]`.
    file_mods: Vec<(String, Option<String>)>,
    /// `mod NAME { ... }` blocks (not `#[cfg(test)]`): name and body.
    inline_mods: Vec<(String, TokenStream)>,
    /// `use` paths, flattened.
    uses: Vec<RawPath>,
    /// Other paths with `::`.
    paths: Vec<RawPath>,
}

fn punct_is(tt: Option<&TokenTree>, c: char) -> bool {
    matches!(tt, Some(TokenTree::Punct(p)) if p.as_char() == c)
}

/// True when `tokens[i..]` starts with `::`.
fn colons_at(tokens: &[TokenTree], i: usize) -> bool {
    punct_is(tokens.get(i), ':') && punct_is(tokens.get(i + 1), ':')
}

/// The attribute text of `#[...]` groups, e.g. `cfg(test)` or `path = "x.rs"`.
fn attribute_text(group: &proc_macro2::Group) -> String {
    group.stream().to_string().replace(' ', "")
}

/// Flattens a `use` tree starting at `tokens[i]` into full paths; returns the index after it.
fn use_tree(tokens: &[TokenTree], mut i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    if colons_at(tokens, i) && path.is_empty() {
        // `use ::std::...`: an external crate.
        return;
    }
    loop {
        match tokens.get(i) {
            Some(TokenTree::Ident(id)) => {
                let name = id.to_string();
                if name == "as" {
                    out.push(path);
                    return;
                }
                if name == "self" && !path.is_empty() {
                    out.push(path);
                    return;
                }
                path.push(name);
                i += 1;
                if colons_at(tokens, i) {
                    i += 2;
                } else {
                    out.push(path);
                    return;
                }
            }
            Some(TokenTree::Punct(p)) if p.as_char() == '*' => {
                out.push(path);
                return;
            }
            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                for branch in inner.split(|t| punct_is(Some(t), ',')) {
                    if !branch.is_empty() {
                        use_tree(branch, 0, &path, out);
                    }
                }
                return;
            }
            _ => {
                if !path.is_empty() {
                    out.push(path);
                }
                return;
            }
        }
    }
}

/// Reads one module's tokens (not descending into inline modules, which are modules of their
/// own) and collects its declarations and paths.
fn scan(stream: TokenStream, out: &mut Scan) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    let mut attrs: Vec<String> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let tt = &tokens[i];
        // Attributes: remembered for the item they precede.
        if punct_is(Some(tt), '#') {
            let mut j = i + 1;
            if punct_is(tokens.get(j), '!') {
                j += 1;
            }
            if let Some(TokenTree::Group(g)) = tokens.get(j)
                && g.delimiter() == Delimiter::Bracket
            {
                attrs.push(attribute_text(g));
                i = j + 1;
                continue;
            }
        }
        match tt {
            TokenTree::Ident(id) if id == "mod" => {
                if let Some(TokenTree::Ident(name)) = tokens.get(i + 1) {
                    let is_test = attrs.iter().any(|a| a == "cfg(test)");
                    let path_attr = attrs.iter().find_map(|a| {
                        a.strip_prefix("path=")
                            .map(|v| v.trim_matches('"').to_string())
                    });
                    match tokens.get(i + 2) {
                        Some(TokenTree::Group(body)) if body.delimiter() == Delimiter::Brace => {
                            if !is_test {
                                out.inline_mods.push((name.to_string(), body.stream()));
                            }
                            attrs.clear();
                            i += 3;
                            continue;
                        }
                        _ if !is_test => out.file_mods.push((name.to_string(), path_attr)),
                        _ => {}
                    }
                }
            }
            TokenTree::Ident(id) if id == "use" => {
                let line = id.span().start().line;
                let end = tokens[i..]
                    .iter()
                    .position(|t| punct_is(Some(t), ';'))
                    .map_or(tokens.len(), |k| i + k);
                let mut flat = Vec::new();
                use_tree(&tokens[i + 1..end], 0, &[], &mut flat);
                out.uses
                    .extend(flat.into_iter().map(|segments| RawPath { segments, line }));
                attrs.clear();
                i = end + 1;
                continue;
            }
            TokenTree::Ident(id) if colons_at(&tokens, i + 1) => {
                let after_dollar = i > 0 && punct_is(tokens.get(i - 1), '$');
                let after_colons = i > 1 && colons_at(&tokens, i - 2);
                if !after_dollar && !after_colons {
                    let line = id.span().start().line;
                    let mut segments = vec![id.to_string()];
                    let mut j = i + 1;
                    while colons_at(&tokens, j) {
                        match tokens.get(j + 2) {
                            Some(TokenTree::Ident(next)) => {
                                segments.push(next.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    out.paths.push(RawPath { segments, line });
                    attrs.clear();
                    i = j;
                    continue;
                }
            }
            TokenTree::Group(g) => scan(g.stream(), out),
            _ => {}
        }
        if !matches!(tt, TokenTree::Ident(id) if id == "pub")
            && !matches!(tt, TokenTree::Group(g) if g.delimiter() == Delimiter::Parenthesis)
        {
            attrs.clear();
        }
        i += 1;
    }
}

impl ModuleGraph {
    /// Reads the crate whose root file is `root` (its `lib.rs`).
    fn read(root: &Path, sources: &dyn Sources) -> Result<ModuleGraph, String> {
        let mut graph = ModuleGraph::default();
        let text = sources
            .read(root)
            .ok_or_else(|| format!("cannot read {}", root.display()))?;
        let dir = root.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut pending: Vec<(Vec<String>, TokenStream, PathBuf, PathBuf)> =
            vec![(Vec::new(), parse(&text, root)?, dir, root.to_path_buf())];
        let mut scans: Vec<(Vec<String>, Scan)> = Vec::new();
        while let Some((path, tokens, child_dir, file)) = pending.pop() {
            let mut s = Scan::default();
            scan(tokens, &mut s);
            for (name, body) in std::mem::take(&mut s.inline_mods) {
                let mut child = path.clone();
                child.push(name.clone());
                pending.push((child, body, child_dir.join(&name), file.clone()));
            }
            for (name, path_attr) in &s.file_mods {
                let (child_file, grandchild_dir) = match path_attr {
                    Some(p) => {
                        let f = file.parent().unwrap_or(Path::new("")).join(p);
                        let d = f.parent().unwrap_or(Path::new("")).to_path_buf();
                        (f, d)
                    }
                    None => {
                        let flat = child_dir.join(format!("{name}.rs"));
                        if sources.read(&flat).is_some() {
                            (flat, child_dir.join(name))
                        } else {
                            (child_dir.join(name).join("mod.rs"), child_dir.join(name))
                        }
                    }
                };
                let text = sources.read(&child_file).ok_or_else(|| {
                    format!(
                        "`mod {name};` in {}: cannot read {}",
                        file.display(),
                        child_file.display()
                    )
                })?;
                let mut child = path.clone();
                child.push(name.clone());
                pending.push((
                    child,
                    parse(&text, &child_file)?,
                    grandchild_dir,
                    child_file,
                ));
            }
            graph.modules.insert(path.clone(), Module { file });
            scans.push((path, s));
        }
        for (from, s) in scans {
            let file = graph.modules[&from].file.clone();
            for (raw, is_use) in s
                .uses
                .iter()
                .map(|p| (p, true))
                .chain(s.paths.iter().map(|p| (p, false)))
            {
                let _ = is_use;
                if let Some(to) = graph.resolve(&from, &raw.segments) {
                    let is_ancestor = to.len() <= from.len() && from[..to.len()] == to[..];
                    if !is_ancestor {
                        graph
                            .edges
                            .entry(from.clone())
                            .or_default()
                            .entry(to)
                            .or_insert_with(|| Reference {
                                file: file.clone(),
                                line: raw.line,
                                path: raw.segments.join("::"),
                            });
                    }
                }
            }
        }
        Ok(graph)
    }

    /// The deepest module a path written in module `from` names, if it names one of this crate.
    fn resolve(&self, from: &[String], segments: &[String]) -> Option<Vec<String>> {
        let first = segments.first()?;
        let (mut base, rest): (Vec<String>, &[String]) = match first.as_str() {
            "crate" => (Vec::new(), &segments[1..]),
            "self" => (from.to_vec(), &segments[1..]),
            "super" => {
                let supers = segments.iter().take_while(|s| *s == "super").count();
                if supers > from.len() {
                    return None;
                }
                (from[..from.len() - supers].to_vec(), &segments[supers..])
            }
            _ => {
                // A relative path: only a child module of `from` makes it one of ours.
                let mut child = from.to_vec();
                child.push(first.clone());
                if !self.modules.contains_key(&child) {
                    return None;
                }
                (from.to_vec(), segments)
            }
        };
        for seg in rest {
            let mut next = base.clone();
            next.push(seg.clone());
            if self.modules.contains_key(&next) {
                base = next;
            } else {
                break;
            }
        }
        Some(base)
    }

    /// Every cycle, one per strongly connected component of more than one module, each written
    /// `a -> b -> a` with the reference behind each edge.
    fn cycles(&self) -> Vec<String> {
        let nodes: Vec<&Vec<String>> = self.modules.keys().collect();
        let index: BTreeMap<&Vec<String>, usize> =
            nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let succ: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                self.edges
                    .get(*n)
                    .map(|to| to.keys().map(|t| index[t]).collect())
                    .unwrap_or_default()
            })
            .collect();
        let mut out = Vec::new();
        for component in strongly_connected(&succ) {
            if component.len() < 2 {
                continue;
            }
            let members: BTreeSet<usize> = component.iter().copied().collect();
            let start = *members.first().unwrap();
            let cycle = shortest_cycle(start, &succ, &members);
            let mut text = String::new();
            let name = |i: usize| display(nodes[i]);
            let _ = write!(text, "{}", name(cycle[0]));
            for pair in cycle.windows(2) {
                let r = &self.edges[nodes[pair[0]]][nodes[pair[1]]];
                let _ = write!(
                    text,
                    "\n    -> {}   ({}:{}: `{}`)",
                    name(pair[1]),
                    r.file.display(),
                    r.line,
                    r.path
                );
            }
            out.push(text);
        }
        out
    }
}

fn display(path: &[String]) -> String {
    if path.is_empty() {
        "crate".to_string()
    } else {
        path.join("::")
    }
}

fn parse(text: &str, file: &Path) -> Result<TokenStream, String> {
    TokenStream::from_str(text).map_err(|e| format!("{}: {e}", file.display()))
}

/// Tarjan's strongly connected components.
fn strongly_connected(succ: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        succ: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.succ[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(component);
        }
    }
    let n = succ.len();
    let mut s = State {
        succ,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

/// The shortest path `start -> ... -> start` inside `members` (breadth first).
fn shortest_cycle(start: usize, succ: &[Vec<usize>], members: &BTreeSet<usize>) -> Vec<usize> {
    let mut parent: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &succ[v] {
            if !members.contains(&w) {
                continue;
            }
            if w == start {
                let mut path = vec![start, v];
                let mut at = v;
                while at != start {
                    at = parent[&at];
                    path.push(at);
                }
                path.reverse();
                return path;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = parent.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    unreachable!("a strongly connected component of two or more has a cycle through each member")
}

/// Fails with every cycle of the crate whose `src/` is `src` (relative to the workspace root).
fn assert_no_cycles(src: &str) {
    let workspace = Files(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let graph = ModuleGraph::read(&Path::new(src).join("lib.rs"), &workspace)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        graph.modules.len() > 3,
        "{src}: only {} modules found; the reader is broken",
        graph.modules.len()
    );
    let cycles = graph.cycles();
    assert!(
        cycles.is_empty(),
        "{src} has module cycles (a submodule's use of its ancestors does not count):\n\n{}",
        cycles.join("\n\n")
    );
}

#[test]
fn the_compiler_has_no_module_cycles() {
    assert_no_cycles("nanovm-dsl/src");
}

#[test]
fn the_runtime_has_no_module_cycles() {
    assert_no_cycles("nanovm-runtime/src");
}

// ---- the checker itself, on small inline crates ----------------------------------------------

fn inline_crate(files: &[(&str, &str)]) -> ModuleGraph {
    let sources: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|(p, t)| (PathBuf::from("src").join(p), t.to_string()))
        .collect();
    ModuleGraph::read(Path::new("src/lib.rs"), &sources).unwrap_or_else(|e| panic!("{e}"))
}

fn edges(g: &ModuleGraph) -> Vec<String> {
    g.edges
        .iter()
        .flat_map(|(from, to)| {
            to.keys()
                .map(move |t| format!("{} -> {}", display(from), display(t)))
        })
        .collect()
}

#[test]
fn a_tree_has_no_cycle() {
    let g = inline_crate(&[
        ("lib.rs", "pub mod a; pub mod b; pub use a::Thing;"),
        (
            "a.rs",
            "use crate::b::helper; pub struct Thing; mod inner { use super::Thing; }",
        ),
        ("b.rs", "pub fn helper() {}"),
    ]);
    assert_eq!(edges(&g), ["crate -> a", "a -> b"]);
    assert!(g.cycles().is_empty(), "{:?}", g.cycles());
}

#[test]
fn a_use_cycle_is_found_and_spelled_out() {
    let g = inline_crate(&[
        ("lib.rs", "mod syntax;"),
        (
            "syntax/mod.rs",
            "mod errors;\nmod parser;\npub use parser::parse;",
        ),
        (
            "syntax/errors.rs",
            "use crate::syntax::parser::{Rule, NvmParser};\n",
        ),
        (
            "syntax/parser.rs",
            "use crate::syntax::errors;\npub fn parse() { errors::build(); }",
        ),
    ]);
    let cycles = g.cycles();
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(
        cycles[0].starts_with("syntax::errors\n    -> syntax::parser"),
        "{}",
        cycles[0]
    );
    assert!(cycles[0].contains("-> syntax::errors"), "{}", cycles[0]);
    assert!(
        cycles[0].contains("src/syntax/errors.rs:1: `crate::syntax::parser::Rule`"),
        "{}",
        cycles[0]
    );
}

#[test]
fn nested_use_groups_super_paths_and_plain_paths_are_edges() {
    let g = inline_crate(&[
        ("lib.rs", "mod a; mod b; mod c; mod d;"),
        ("a.rs", "use crate::{b::{self, X}, c::{inner::{Y as Z}}};"),
        ("b.rs", "mod sub;"),
        ("b/sub.rs", "fn f() { super::super::d::g(); }"),
        ("c.rs", "pub mod inner { pub struct Y; }"),
        ("d.rs", "fn g() { let _ = crate::a::f; }"),
    ]);
    assert_eq!(
        edges(&g),
        ["a -> b", "a -> c::inner", "b::sub -> d", "d -> a"]
    );
    assert!(g.cycles().is_empty(), "{:?}", g.cycles());
    // Closing the loop: b depends on its child b::sub (allowed), which reaches d -> a -> b.
    let g = inline_crate(&[
        ("lib.rs", "mod a; mod b; mod d;"),
        ("a.rs", "use crate::b::X;"),
        ("b.rs", "mod sub; pub use sub::X;"),
        ("b/sub.rs", "pub struct X; fn f() { super::super::d::g(); }"),
        ("d.rs", "fn g() { let _ = crate::a::f; }"),
    ]);
    let cycles = g.cycles();
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(cycles[0].starts_with("a\n    -> b"), "{}", cycles[0]);
}

#[test]
fn test_modules_and_a_child_using_its_parent_are_not_cycles() {
    let g = inline_crate(&[
        ("lib.rs", "mod a; mod b;"),
        (
            "a.rs",
            "mod child;\nuse child::go;\npub struct Ctx;\n#[cfg(test)]\nmod tests { use crate::b::X; }",
        ),
        ("a/child.rs", "use super::Ctx; pub fn go() {}"),
        ("b.rs", "use crate::a::Ctx; pub struct X;"),
    ]);
    assert_eq!(edges(&g), ["a -> a::child", "b -> a"]);
    assert!(g.cycles().is_empty(), "{:?}", g.cycles());
}
