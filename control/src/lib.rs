//! vpcd's control side: the lab file (config.md), its validation (`vpcd check`), and its
//! compilation into the dataplane's immutable snapshot.

pub mod bgp;
pub mod capture_writer;
pub mod cli;
pub mod compile;
pub mod control_socket;
pub mod diag;
pub mod fault_control;
pub mod faults;
pub mod flow_log_reader;
pub mod flow_log_writer;
pub mod generations;
pub mod graph;
pub mod import;
pub mod json;
pub mod lab;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod netns;
pub mod public_ips;
pub mod router;
pub mod routes;
pub mod runstate;
pub mod runtime;
pub mod startup;
pub mod trace;
pub mod traffic_mirror;
pub mod validate;
pub mod values;
pub mod vpn;
pub mod vpn_config;
pub mod vpn_lab;
pub mod vpn_runtime;
pub mod yaml;

use std::path::Path;

use dataplane::Snapshot;

pub use diag::{Diagnostic, InFile};
pub use model::Lab;

/// The built-in default lab of `vpcd up` with no file (lab.md): a public and a private
/// subnet, a NAT gateway, an IGW, an EIGW and one internet host.
pub const DEFAULT_LAB: &str = include_str!("../../configs/default.yaml");

/// Why a lab could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the lab has {} error(s)", diag::count(.0))]
    Invalid(Vec<Diagnostic>),
    #[error(transparent)]
    Compile(#[from] compile::CompileError),
}

/// Parses, decodes and validates a lab; every problem found is returned, sorted by place.
pub fn check_text(text: &str) -> Result<Lab, Vec<Diagnostic>> {
    let mut diags = diag::Diagnostics::default();
    let Some(root) = yaml::parse_document(text, &mut diags) else {
        return Err(diags.into_sorted());
    };
    let lab = model::decode(&root, &mut diags);
    // The tree is the larger copy of the file (a node, a span and a string per value):
    // freed before validation, which needs only the lab.
    drop(root);
    validate::validate(&lab, &mut diags);
    let mut lab = lab;
    if diags.has_errors() {
        Err(diags.into_sorted())
    } else {
        lab.warnings = diags.into_sorted();
        Ok(lab)
    }
}

/// Checks and compiles a lab into a snapshot of the given generation.
pub fn load_text(text: &str, generation: u64) -> Result<(Lab, Snapshot), LoadError> {
    let lab = check_text(text).map_err(LoadError::Invalid)?;
    let snapshot = compile::compile(&lab, generation)?;
    Ok((lab, snapshot))
}

/// Reads a lab file: at most one byte more than [`yaml::MAX_LAB_BYTES`], so that the
/// check refuses a file over the limit and a file of any size costs no more memory than
/// one at the limit (`vpcd check` of a 256 MiB file peaked at 265 MiB, issue 22).
pub fn read(path: &Path) -> Result<String, LoadError> {
    use std::io::Read;
    let io = |source| LoadError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(yaml::MAX_LAB_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(io)?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        // Cut at the limit, the last character may be split; the text is refused for its
        // size alone, so replacing what does not decode changes nothing.
        Err(e) if e.as_bytes().len() > yaml::MAX_LAB_BYTES => {
            Ok(String::from_utf8_lossy(e.as_bytes()).into_owned())
        }
        Err(_) => Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))),
    }
}
