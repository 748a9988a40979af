//! Snapshots of a host's file tree ([`Tree`]): every path with its kind,
//! permission bits, owner and content hash or symlink target, for
//! "byte-identical" assertions, and a readable [`TreeDiff`] between two.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a path is, with what identifies its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// sha256 of the content, hex.
    File {
        sha256: String,
        size: u64,
    },
    Symlink(String),
    CharDevice(u64),
    BlockDevice(u64),
    Fifo,
    Socket,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits, setuid/setgid/sticky included (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Dir => "dir".to_string(),
            Kind::File { sha256, size } => format!("file {size}B sha256:{}", &sha256[..12]),
            Kind::Symlink(t) => format!("symlink -> {t}"),
            Kind::CharDevice(d) => format!("char device {d:#x}"),
            Kind::BlockDevice(d) => format!("block device {d:#x}"),
            Kind::Fifo => "fifo".to_string(),
            Kind::Socket => "socket".to_string(),
        };
        write!(f, "{kind} {:04o} {}:{}", self.mode, self.uid, self.gid)
    }
}

/// Every path under a host's root (as `/etc/passwd`), minus the excluded ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree(pub BTreeMap<String, Entry>);

impl Tree {
    /// Walks `root`, leaving out every path in `excluded` and all beneath it.
    pub fn scan(root: &Path, excluded: &[&str]) -> Tree {
        let mut map = BTreeMap::new();
        let mut files = Vec::new();
        walk(root, "", excluded, &mut map, &mut files);
        let sums = sha256_of(&files);
        for (path, full) in files {
            if let Some(Entry { kind: Kind::File { sha256, .. }, .. }) = map.get_mut(&path) {
                sha256.clone_from(sums.get(&full).unwrap_or_else(|| panic!("no sha256 of {}", full.display())));
            }
        }
        Tree(map)
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.0.get(path)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// What changed from `self` to `after`.
    pub fn diff(&self, after: &Tree) -> TreeDiff {
        let mut d = TreeDiff::default();
        for (path, before) in &self.0 {
            match after.0.get(path) {
                None => d.removed.push(path.clone()),
                Some(now) if now != before => d.changed.push((path.clone(), before.clone(), now.clone())),
                Some(_) => {}
            }
        }
        for path in after.0.keys() {
            if !self.0.contains_key(path) {
                d.added.push(path.clone());
            }
        }
        d
    }
}

/// The sha256 of each file, by `sha256sum` (a host of the real image holds
/// 100 MB; sha2 in a test build hashes that many times slower).
fn sha256_of(files: &[(String, PathBuf)]) -> HashMap<PathBuf, String> {
    use std::io::Write;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut child = Command::new("xargs")
        .args(["-0", "sha256sum", "--zero", "--"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    let mut stdin = child.stdin.take().expect("stdin");
    let list: Vec<u8> = files.iter().flat_map(|(_, f)| f.as_os_str().as_bytes().iter().copied().chain([0])).collect();
    let writer = std::thread::spawn(move || stdin.write_all(&list).expect("feed sha256sum"));
    let out = child.wait_with_output().expect("sha256sum");
    writer.join().expect("feed sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    out.stdout
        .split(|b| *b == 0)
        .filter(|r| r.len() > 66)
        .map(|r| {
            let hash = String::from_utf8(r[..64].to_vec()).expect("hex");
            (PathBuf::from(std::ffi::OsString::from_vec(r[66..].to_vec())), hash)
        })
        .collect()
}

fn walk(
    dir: &Path,
    prefix: &str,
    excluded: &[&str],
    map: &mut BTreeMap<String, Entry>,
    files: &mut Vec<(String, PathBuf)>,
) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for e in entries {
        let e = e.expect("dir entry");
        let name = e.file_name().to_string_lossy().into_owned();
        let path = format!("{prefix}/{name}");
        if excluded.contains(&path.as_str()) {
            continue;
        }
        let full = e.path();
        let meta = std::fs::symlink_metadata(&full).expect("lstat");
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&full).expect("readlink");
            Kind::Symlink(t.to_string_lossy().into_owned())
        } else if ft.is_file() {
            files.push((path.clone(), full.clone()));
            Kind::File { sha256: String::new(), size: meta.len() }
        } else if ft.is_char_device() {
            Kind::CharDevice(meta.rdev())
        } else if ft.is_block_device() {
            Kind::BlockDevice(meta.rdev())
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            Kind::Socket
        };
        let is_dir = kind == Kind::Dir;
        map.insert(path.clone(), Entry { kind, mode: meta.mode() & 0o7777, uid: meta.uid(), gid: meta.gid() });
        if is_dir {
            walk(&full, &path, excluded, map, files);
        }
    }
}

/// Paths added, removed and changed between two trees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// (path, before, after)
    pub changed: Vec<(String, Entry, Entry)>,
}

impl TreeDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for TreeDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "(no differences)");
        }
        for p in &self.added {
            writeln!(f, "+ {p}")?;
        }
        for p in &self.removed {
            writeln!(f, "- {p}")?;
        }
        for (p, a, b) in &self.changed {
            writeln!(f, "~ {p}: {a} => {b}")?;
        }
        Ok(())
    }
}
