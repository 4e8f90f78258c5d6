//! Errors of the data-plane API. Each names the interface, map or program concerned.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the eBPF object (pins under {pin_dir})")]
    Load {
        pin_dir: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("program {name} is missing from the eBPF object")]
    MissingProgram { name: &'static str },
    #[error("program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {name} is missing from the eBPF object")]
    MissingMap { name: &'static str },
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("attaching {program} to {iface} ({hook})")]
    Attach {
        iface: String,
        hook: String,
        program: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("interface {iface} has no shifter attachment")]
    NotAttached { iface: String },
    #[error("pin {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("service {service}: {reason}")]
    InvalidService { service: String, reason: String },
    #[error("service {service}: no free slot (at most {max} services)")]
    NoFreeSlot { service: String, max: u32 },
    #[error("{iface}")]
    Leftover {
        iface: String,
        #[source]
        source: Box<Error>,
    },
    #[error("removing {}", .path.display())]
    RemovePins {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("service {service} is not configured")]
    UnknownService { service: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> Error {
    move |source| Error::Map {
        name,
        source: Box::new(source),
    }
}
