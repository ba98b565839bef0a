//! Reading the lab file's YAML into typed values with their positions.
//!
//! The YAML library is marked-yaml: it keeps a span (line, column) on every node and on
//! every mapping key, and leaves scalars as text, so that `account_id: 012345678901`
//! keeps its leading zero and `no` does not become `false` (YAML 1.1 surprises). Typing
//! is ours, done here field by field, and every problem becomes a [`Diagnostic`] instead
//! of stopping at the first, which serde-based decoding cannot do.

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node, Span};

use crate::diag::{closest, Diagnostics, Loc, S};

/// The result of a value parser: the value, or (what is wrong, how to fix it).
pub type Parsed<T> = Result<T, (String, String)>;

/// The largest lab file vpcd reads (`check`, `up`, `apply`, the control socket): a lab
/// of 100,000 routes (the performance target's size) is about 6 MB, so 16 MiB leaves room
/// while bounding what one hostile file can cost (issue 22).
pub const MAX_LAB_BYTES: usize = 16 << 20;

/// The deepest nesting of lists and mappings a lab file may have. The deepest the format
/// goes is 8 (`vpcs[].endpoints[].policy.allow[]` items); yaml-rust2's loader recurses
/// once per level, so a file of 5,000 nested `- - - …` (10 KB) overflowed the stack.
pub const MAX_DEPTH: usize = 32;

/// The longest single value: ids, CIDRs and names are short, and AWS bounds its own
/// free text (a security group's description: 255 characters; a flow log's format:
/// a few hundred). Longer values are refused where they are read.
pub const MAX_SCALAR: usize = 4096;

/// Parses the whole text; a YAML syntax error is one diagnostic (the parser cannot go on).
///
/// A first pass over yaml-rust2's event stream (a loop, no recursion) refuses what the
/// tree builder cannot take safely: too large, too deep. It also knows which collections
/// are open, so a syntax error found at the end of the file (an unclosed `[`) is reported
/// where that construct opened.
pub fn parse_document(text: &str, diags: &mut Diagnostics) -> Option<Node> {
    if let Err((line, col, message, fix)) = precheck(text) {
        diags.error(&Loc::new(line, col, "(document)"), message, fix);
        return None;
    }
    let opts = LoaderOptions::default().error_on_duplicate_keys(true);
    match marked_yaml::parse_yaml_with_options(0, text, opts) {
        Ok(node) => Some(node),
        Err(e) => {
            use marked_yaml::LoadError::*;
            let (marker, message, fix) = match &e {
                TopLevelMustBeMapping(m) => (
                    Some(*m),
                    "the lab file must be a mapping".to_string(),
                    "start with `version: 1`".to_string(),
                ),
                ScanError(m, se) => (
                    Some(*m),
                    format!("YAML syntax error: {se}"),
                    "fix the YAML syntax at this place".to_string(),
                ),
                UnexpectedAnchor(m) => (
                    Some(*m),
                    "YAML anchors are not supported".to_string(),
                    "write the value out".to_string(),
                ),
                UnexpectedTag(m) => (
                    Some(*m),
                    "YAML tags are not supported".to_string(),
                    "remove the `!tag`".to_string(),
                ),
                MappingKeyMustBeScalar(m) => (
                    Some(*m),
                    "a mapping key must be a plain name".to_string(),
                    "use a field name as key".to_string(),
                ),
                DuplicateKey(inner) => (
                    inner.key.span().start().copied(),
                    format!("the field `{}` is given twice", inner.key.as_str()),
                    "keep one of them".to_string(),
                ),
                other => (None, other.to_string(), "fix the YAML".to_string()),
            };
            let (line, col) = marker.map_or((1, 1), |m| (m.line(), m.column()));
            diags.error(&Loc::new(line, col, "(document)"), message, fix);
            None
        }
    }
}

/// A place and what is wrong there, with the fix.
type Refusal = (usize, usize, String, String);

/// Size, depth and syntax, checked on the event stream before any tree is built.
fn precheck(text: &str) -> Result<(), Refusal> {
    use yaml_rust2::parser::{Event, Parser};
    if text.len() > MAX_LAB_BYTES {
        return Err((
            1,
            1,
            // Not the file's size: a file is read no further than one byte past the limit.
            format!(
                "the lab file is larger than vpcd reads: at most {} MiB ({MAX_LAB_BYTES} bytes)",
                MAX_LAB_BYTES >> 20
            ),
            "split the lab or remove what it does not need".to_string(),
        ));
    }
    // The open collections: (line, column, the `[` or `{` that opened it, if any).
    let mut open: Vec<(usize, usize, Option<char>)> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let opener = |line: usize, col: usize| {
        lines
            .get(line.wrapping_sub(1))
            .and_then(|l| l.chars().nth(col.wrapping_sub(1)))
            .filter(|c| matches!(c, '[' | '{'))
    };
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => return Ok(()),
            Ok((Event::SequenceStart(..) | Event::MappingStart(..), m)) => {
                let (line, col) = (m.line(), m.col() + 1);
                if open.len() >= MAX_DEPTH {
                    return Err((
                        line,
                        col,
                        format!("lists and mappings nest more than {MAX_DEPTH} deep here"),
                        "no lab field nests this deep; check the indentation and the `- ` markers"
                            .to_string(),
                    ));
                }
                open.push((line, col, opener(line, col)));
            }
            Ok((Event::SequenceEnd | Event::MappingEnd, _)) => {
                open.pop();
            }
            Ok(_) => {}
            Err(e) => {
                let m = e.marker();
                let at_end = m.index() + 1 >= text.trim_end().chars().count();
                // An error at the end of the file is about what is still open: point at
                // the innermost unclosed `[` or `{`, where the person has to look.
                let unclosed = open
                    .iter()
                    .rev()
                    .find_map(|&(l, c, o)| o.map(|o| (l, c, o)));
                if let (true, Some((line, col, o))) = (at_end, unclosed) {
                    let close = if o == '[' { ']' } else { '}' };
                    return Err((
                        line,
                        col,
                        format!(
                            "YAML syntax error: this `{o}` is never closed ({})",
                            e.info()
                        ),
                        format!("add the `{close}` that ends it"),
                    ));
                }
                return Err((
                    m.line(),
                    m.col() + 1,
                    format!("YAML syntax error: {}", e.info()),
                    "fix the YAML syntax at this place".to_string(),
                ));
            }
        }
    }
}

/// A mapping being decoded: its node, its path and its location.
pub struct Map<'n> {
    pub node: &'n MarkedMappingNode,
    pub path: String,
    pub at: Loc,
}

/// Where a span starts, as a location with this path.
pub fn loc(span: &Span, path: &str) -> Loc {
    match span.start() {
        Some(m) => Loc::new(m.line(), m.column(), path),
        None => Loc::implicit(path),
    }
}

fn is_null(node: &Node) -> bool {
    matches!(node, Node::Scalar(s) if matches!(s.as_str(), "~" | "null" | ""))
}

/// Ids of the file itself, for the examples in fixes: "add `subnet: app-a`" names a
/// subnet the person wrote, not one of vpcd's own examples.
#[derive(Clone, Debug)]
pub struct Hints {
    pub vpc: String,
    pub other_vpc: String,
    pub subnet: String,
    pub target: String,
    pub service: String,
}

impl Default for Hints {
    fn default() -> Self {
        Hints {
            vpc: "vpc-lab".into(),
            other_vpc: "vpc-shared".into(),
            subnet: "public-a".into(),
            target: "igw-lab".into(),
            service: "s3".into(),
        }
    }
}

impl Hints {
    /// The first ids of each kind the document holds, where it has them.
    pub fn of(root: &Node) -> Hints {
        let mut h = Hints::default();
        let scalar = |n: Option<&Node>| {
            n.and_then(Node::as_scalar)
                .map(|s| s.as_str().trim().to_string())
                .filter(|s| !s.is_empty())
        };
        fn list(n: Option<&Node>) -> Vec<&Node> {
            n.and_then(Node::as_sequence)
                .map(|s| s.iter().collect())
                .unwrap_or_default()
        }
        let Some(top) = root.as_mapping() else {
            return h;
        };
        let vpcs = list(top.get("vpcs"));
        let ids: Vec<String> = vpcs
            .iter()
            .filter_map(|v| scalar(v.as_mapping()?.get("id")))
            .collect();
        if let Some(v) = ids.first() {
            h.vpc = v.clone();
        }
        if let Some(v) = ids.get(1) {
            h.other_vpc = v.clone();
        }
        if let Some(v) = vpcs.first().and_then(|v| v.as_mapping()) {
            if let Some(s) = list(v.get("subnets"))
                .iter()
                .find_map(|s| scalar(s.as_mapping()?.get("id")))
            {
                h.subnet = s;
            }
            h.target = scalar(v.get("internet_gateway"))
                .or_else(|| {
                    list(v.get("nat_gateways"))
                        .iter()
                        .find_map(|n| scalar(n.as_mapping()?.get("id")))
                })
                .unwrap_or_else(|| "blackhole".into());
        }
        if let Some(s) = list(top.get("services"))
            .iter()
            .find_map(|s| scalar(s.as_mapping()?.get("name")))
        {
            h.service = s;
        }
        h
    }
}

/// Decodes typed values out of YAML nodes, collecting every problem.
pub struct Decoder<'d> {
    pub diags: &'d mut Diagnostics,
    pub hints: Hints,
}

impl<'d> Decoder<'d> {
    pub fn new(diags: &'d mut Diagnostics) -> Self {
        Decoder {
            diags,
            hints: Hints::default(),
        }
    }

    /// `node` as a mapping whose keys are all in `known`; an unknown key is an error that
    /// names the closest known one.
    pub fn map<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        what: &str,
        known: &[&str],
    ) -> Option<Map<'n>> {
        let at = loc(node.span(), path);
        let Some(m) = node.as_mapping() else {
            self.diags.error(
                &at,
                format!("expected {what} (a mapping of fields)"),
                format!("write {what} as `field: value` lines"),
            );
            return None;
        };
        for key in m.keys() {
            let k = key.as_str();
            if !known.contains(&k) {
                // A hostile key is not echoed whole (issue 22): errors stay small.
                let k = shown(k);
                let kat = loc(key.span(), &join(path, k));
                let fix = match closest(k, known) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!("known fields: {}", known.join(", ")),
                };
                self.diags
                    .error(&kat, format!("unknown field `{k}` in {what}"), fix);
            }
        }
        Some(Map {
            node: m,
            path: path.to_string(),
            at,
        })
    }

    /// The node of field `key`, unless absent or null.
    pub fn node<'n>(&self, m: &Map<'n>, key: &str) -> Option<&'n Node> {
        m.node.get(key).filter(|n| !is_null(n))
    }

    /// An optional scalar field parsed by `parse`.
    pub fn opt<T>(
        &mut self,
        m: &Map<'_>,
        key: &str,
        parse: impl Fn(&str) -> Parsed<T>,
    ) -> Option<S<T>> {
        let node = self.node(m, key)?;
        self.scalar(node, &join(&m.path, key), parse)
    }

    /// A required scalar field parsed by `parse`; missing is an error at the object.
    pub fn req<T>(
        &mut self,
        m: &Map<'_>,
        key: &str,
        example: &str,
        parse: impl Fn(&str) -> Parsed<T>,
    ) -> Option<S<T>> {
        if self.node(m, key).is_none() {
            self.diags.error(
                &m.at,
                format!("the required field `{key}` is missing"),
                format!("add `{key}: {example}`"),
            );
            return None;
        }
        self.opt(m, key, parse)
    }

    /// A scalar node parsed by `parse`.
    pub fn scalar<T>(
        &mut self,
        node: &Node,
        path: &str,
        parse: impl Fn(&str) -> Parsed<T>,
    ) -> Option<S<T>> {
        let at = loc(node.span(), path);
        let Some(s) = node.as_scalar() else {
            self.diags.error(
                &at,
                "expected a single value, found a list or mapping",
                "write one value here",
            );
            return None;
        };
        let text = scalar_text(s);
        if text.len() > MAX_SCALAR {
            self.diags.error(
                &at,
                format!(
                    "this value is {} bytes long; a lab value may have at most {MAX_SCALAR}",
                    text.len()
                ),
                "shorten it",
            );
            return None;
        }
        match parse(text) {
            Ok(v) => Some(S::new(v, at)),
            Err((message, fix)) => {
                self.diags.error(&at, message, fix);
                // A prefix with host bits set says which prefix was meant: the object
                // keeps that one, so the rest of it is still checked (one pass finds
                // every mistake).
                let meant = meant_prefix(text)?;
                parse(&meant).ok().map(|v| S::new(v, at))
            }
        }
    }

    /// An optional free-text field that may be longer than [`MAX_SCALAR`], up to `max`
    /// bytes (`limit` says whose limit that is). Kept as written: a script's whitespace
    /// matters.
    pub fn opt_long_text(
        &mut self,
        m: &Map<'_>,
        key: &str,
        max: usize,
        limit: &str,
    ) -> Option<S<String>> {
        let node = self.node(m, key)?;
        let at = loc(node.span(), &join(&m.path, key));
        let Some(s) = node.as_scalar() else {
            self.diags.error(
                &at,
                "expected text, found a list or mapping",
                "write the text here (a `|` block keeps its lines)",
            );
            return None;
        };
        if s.as_str().len() > max {
            self.diags.error(
                &at,
                format!(
                    "this is {} bytes long; {limit} is {max} bytes",
                    s.as_str().len()
                ),
                "shorten it",
            );
            return None;
        }
        Some(S::new(s.as_str().to_string(), at))
    }

    /// The items of an optional list field, each with its path (`key[i]`).
    pub fn list<'n>(&mut self, m: &Map<'n>, key: &str) -> Vec<(String, &'n Node)> {
        let Some(node) = self.node(m, key) else {
            return Vec::new();
        };
        let path = join(&m.path, key);
        match node.as_sequence() {
            Some(seq) => seq
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("{path}[{i}]"), n))
                .collect(),
            None => {
                self.diags.error(
                    &loc(node.span(), &path),
                    format!("`{key}` must be a list"),
                    format!("write `{key}: [...]` or one `- item` per line"),
                );
                Vec::new()
            }
        }
    }

    /// An optional list of scalars parsed by `parse`.
    pub fn scalar_list<T>(
        &mut self,
        m: &Map<'_>,
        key: &str,
        parse: impl Fn(&str) -> Parsed<T>,
    ) -> Vec<S<T>> {
        let items = self.list(m, key);
        items
            .into_iter()
            .filter_map(|(p, n)| self.scalar(n, &p, &parse))
            .collect()
    }

    /// The location of field `key` if present, else of the object.
    pub fn at(&self, m: &Map<'_>, key: &str) -> Loc {
        match m.node.get(key) {
            Some(n) => loc(n.span(), &join(&m.path, key)),
            None => m.at.clone(),
        }
    }
}

/// `10.0.3.5/24` → `10.0.3.0/24`: the prefix a CIDR with host bits set means.
fn meant_prefix(text: &str) -> Option<String> {
    let (addr, len) = text.split_once('/')?;
    let net = ip_network::IpNetwork::new_truncate(
        addr.parse::<std::net::IpAddr>().ok()?,
        len.parse().ok()?,
    )
    .ok()?;
    (net.to_string() != text).then(|| net.to_string())
}

/// A name from the file as errors show it: at most 64 characters.
pub fn shown(name: &str) -> &str {
    match name.char_indices().nth(64) {
        Some((i, _)) => &name[..i],
        None => name,
    }
}

fn scalar_text(s: &MarkedScalarNode) -> &str {
    s.as_str().trim()
}

/// `a.b`, or `b` at the top.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}
