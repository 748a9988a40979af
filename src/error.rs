//! The one error type of mingen; every message is printed in one place, `main`.

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// A facts file or flag that is not a valid fact.
    Facts { file: String, line: usize, key: String, message: String },
    /// Arguments that contradict each other or do nothing.
    Usage(String),
    /// A facts file that cannot be read.
    Read { path: String, message: String },
    /// A target name that no file under `targets/` defines.
    UnknownTarget { name: String, known: Vec<String> },
    /// A rule id that the target does not have.
    UnknownRule { id: String, target: String },
    /// A target file that does not load; the targets are compiled in, so this is a bug.
    Target { target: String, message: String },
    /// The script or another output could not be rendered; a bug.
    Internal(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Facts { file, line, key, message } => {
                write!(f, "{file}:{line}: fact `{key}`: {message}")
            }
            Error::Usage(message) => f.write_str(message),
            Error::Read { path, message } => write!(f, "cannot read `{path}`: {message}"),
            Error::UnknownTarget { name, known } => {
                write!(f, "unknown target `{name}`; known targets: {}", known.join(", "))
            }
            Error::UnknownRule { id, target } => {
                write!(f, "target `{target}` has no rule `{id}` (see `mingen plan`)")
            }
            Error::Target { target, message } => {
                write!(f, "target `{target}` does not load (this is a bug in mingen): {message}")
            }
            Error::Internal(message) => write!(f, "internal error (this is a bug in mingen): {message}"),
        }
    }
}

impl std::error::Error for Error {}
