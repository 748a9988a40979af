//! The real image's installed packages as `.apk` files for the local
//! repository: each rebuilt from its record in the image's database
//! (`/lib/apk/db/installed`: name, version, dependencies, provides, install_if,
//! modes), its files' real bytes from the image's tree and its install
//! scripts and triggers (`scripts.tar.gz`, `triggers`). A package the script
//! removes (sudo, curl, e2fsprogs-extra, dhcpcd, ...) can then be installed
//! again, as undo.sh does on a host with its mirror, with the same files.
//!
//! linux-virt is among them (45 MB, hard-linked into hosts, not copied): undo.sh
//! reinstalls it to bring back the modules the script pruned. A file the
//! container build changed (`/etc/modules`) is packaged with Alpine's text from
//! `../shared/alpine/files`.

use std::collections::BTreeMap;

use std::io::Read;
use std::path::{Path, PathBuf};

use super::apk::{Content, Entry, Package};
use super::{Release, paths};

/// One package's record in the installed database.
#[derive(Default)]
struct Record {
    fields: Vec<(char, String)>,
    /// (path without leading slash, is_dir, mode)
    paths: Vec<(String, bool, Option<u32>)>,
}

impl Record {
    fn get(&self, key: char) -> Option<&str> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }
}

fn parse_db(text: &str) -> Vec<Record> {
    let mut records = Vec::new();
    let mut rec = Record::default();
    let mut dir = String::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if rec.get('P').is_some() {
                records.push(std::mem::take(&mut rec));
            }
            dir.clear();
            continue;
        }
        let Some((key, value)) = line.split_once(':') else { continue };
        let key = key.chars().next().expect("a key");
        match key {
            'F' => {
                dir = value.to_string();
                rec.paths.push((dir.clone(), true, None));
            }
            'M' => {
                if let Some(last) = rec.paths.iter_mut().rev().find(|p| p.1) {
                    last.2 = mode_of(value);
                }
            }
            'R' => rec.paths.push((format!("{dir}/{value}"), false, None)),
            'a' => {
                if let Some(last) = rec.paths.last_mut() {
                    last.2 = mode_of(value);
                }
            }
            _ => rec.fields.push((key, value.to_string())),
        }
    }
    records
}

/// The mode of an `a:`/`M:` line (`uid:gid:mode`, octal).
fn mode_of(value: &str) -> Option<u32> {
    value.rsplit(':').next().and_then(|m| u32::from_str_radix(m, 8).ok())
}

/// The image's packages rebuilt as `.apk` files, in a directory of the image's
/// cache: built once for the image, this code and the release files, then
/// shared by every test process (rebuilding 80 MB in a test build is slow).
pub fn image_apks(release: Release) -> PathBuf {
    use sha2::Digest;
    let mut key = sha2::Sha256::new();
    key.update(super::image::RELEASE);
    key.update(include_str!("repack.rs"));
    key.update(include_str!("apk.rs"));
    let mut shared = Vec::new();
    collect(&paths::alpine().join("files/etc"), &mut shared);
    shared.sort();
    for f in &shared {
        key.update(f.to_string_lossy().as_bytes());
        key.update(std::fs::read(f).expect("read a release file"));
    }
    let dir = super::image::cache().join(format!("sandbox-repack-{}", &hex::encode(key.finalize())[..16]));
    if dir.is_dir() {
        return dir;
    }
    let scratch = dir.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("create the repack scratch directory");
    for p in image_packages(release) {
        std::fs::write(scratch.join(p.file_name()), p.build()).expect("write a rebuilt .apk");
    }
    // Another process may have finished first; its copy is as good as ours.
    if std::fs::rename(&scratch, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    dir
}

/// apk's identity of each rebuilt package, by `name-version`: the sha1 of its
/// control gzip stream (the `C:` of apk's database, the `X1<hex>` of its scripts).
pub fn identities(release: Release) -> &'static BTreeMap<String, [u8; 20]> {
    static IDS: std::sync::OnceLock<BTreeMap<String, [u8; 20]>> = std::sync::OnceLock::new();
    IDS.get_or_init(|| {
        use sha1::Digest;
        let mut ids = BTreeMap::new();
        for e in std::fs::read_dir(image_apks(release)).expect("read the rebuilt packages").flatten() {
            let bytes = std::fs::read(e.path()).expect("read a rebuilt package");
            let mut decoder = flate2::bufread::GzDecoder::new(bytes.as_slice());
            std::io::copy(&mut decoder, &mut std::io::sink()).expect("read a control stream");
            let control = &bytes[..bytes.len() - decoder.into_inner().len()];
            let name = e.file_name().to_string_lossy().trim_end_matches(".apk").to_string();
            ids.insert(name, sha1::Sha1::digest(control).into());
        }
        ids
    })
}

/// Makes the database of a host copied from the image name the rebuilt
/// packages' identities in place of the originals' (whose `.apk` files are not
/// here): `C:` lines, the scripts' names in `scripts.tar.gz` and the keys of
/// `triggers`. Names, versions, files and scripts stay as they are. apk then
/// treats the repository's packages as the installed ones, as a host's mirror
/// is treated, so `apk fix --reinstall` (undo.sh) finds them.
pub fn adopt_identities(root: &Path, release: Release) {
    let ids = identities(release);
    let db_path = root.join("lib/apk/db/installed");
    let db = std::fs::read_to_string(&db_path).expect("read the installed database");
    // old identity (Q1 base64) -> new, per record.
    let mut renames: Vec<(String, String, String)> = Vec::new(); // (name-version, old Q1, new Q1)
    let mut out = String::with_capacity(db.len());
    for record in db.split_inclusive("\n\n") {
        let field = |k: &str| record.lines().find_map(|l| l.strip_prefix(k)).unwrap_or_default().to_string();
        let key = format!("{}-{}", field("P:"), field("V:"));
        let old = field("C:");
        match ids.get(&key) {
            Some(id) if !old.is_empty() => {
                let new = format!("Q1{}", base64(id));
                let (from, to) = (format!("C:{old}"), format!("C:{new}"));
                for line in record.split_inclusive('\n') {
                    out.push_str(if line.trim_end() == from { &to } else { line.trim_end() });
                    out.push_str(&line[line.trim_end().len()..]);
                }
                renames.push((key, old, new));
            }
            _ => out.push_str(record),
        }
    }
    std::fs::write(&db_path, out).expect("write the installed database");
    let hex_of = |q1: &str| hex::encode(unbase64(q1.trim_start_matches("Q1")));
    // scripts.tar.gz: <name>-<version>.X1<hex>.<script>
    let scripts_path = root.join("lib/apk/db/scripts.tar.gz");
    let mut scripts = install_scripts(root);
    for (key, old, new) in &renames {
        let (from, to) = (format!("{key}.X1{}.", hex_of(old)), format!("{key}.X1{}.", hex_of(new)));
        let names: Vec<String> = scripts.keys().filter(|n| n.starts_with(&from)).cloned().collect();
        for n in names {
            let data = scripts.remove(&n).expect("a script");
            scripts.insert(n.replacen(&from, &to, 1), data);
        }
    }
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    for (name, data) in &scripts {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        tar.append_data(&mut h, name, data.as_slice()).expect("tar a script");
    }
    let gz = tar.into_inner().expect("finish scripts.tar").finish().expect("gzip scripts.tar");
    std::fs::write(&scripts_path, gz).expect("write scripts.tar.gz");
    // triggers: "<Q1 identity> <paths>"
    let triggers_path = root.join("lib/apk/db/triggers");
    let mut triggers = std::fs::read_to_string(&triggers_path).unwrap_or_default();
    for (_, old, new) in &renames {
        triggers = triggers.replace(&format!("{old} "), &format!("{new} "));
    }
    std::fs::write(&triggers_path, triggers).expect("write triggers");
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64, with padding (apk's `Q1` identities).
fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() { B64[(n >> (18 - 6 * i)) as usize & 63] as char } else { '=' });
        }
    }
    out
}

fn unbase64(text: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().take_while(|c| *c != b'=') {
        let v = B64.iter().position(|b| *b == c).expect("a base64 digit") as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { collect(&p, out) } else { out.push(p) }
    }
}

/// The image's package NAME rebuilt as VERSION, a later build of it: the same fields,
/// files and scripts under a higher `-rN`, which apk installs over it in place (the
/// bench's kernel upgrade: a new kernel cannot be built offline, and the same module
/// directory is what an in-place reinstall of the kernel package brings).
pub fn rebuilt_as(name: &str, version: &str, release: Release) -> Vec<u8> {
    let root = super::image::root();
    let db = std::fs::read_to_string(root.join("lib/apk/db/installed")).expect("read the image's installed database");
    let record = parse_db(&db)
        .into_iter()
        .find(|r| r.get('P') == Some(name))
        .unwrap_or_else(|| panic!("the image has no package {name}"));
    let mut package = rebuild(&root, &record, &install_scripts(&root), &install_triggers(&root), release);
    let was = format!("pkgver = {}\n", package.version);
    let info = package.own_info.take().expect("a rebuilt package's own .PKGINFO");
    assert!(info.contains(&was), "no `{was}` in {name}'s .PKGINFO");
    package.own_info = Some(info.replace(&was, &format!("pkgver = {version}\n")));
    package.version = version.to_string();
    package.build()
}

/// The image's packages, rebuilt.
fn image_packages(release: Release) -> Vec<Package> {
    let root = super::image::root();
    let db = std::fs::read_to_string(root.join("lib/apk/db/installed")).expect("read the image's installed database");
    let (scripts, triggers) = (install_scripts(&root), install_triggers(&root));
    parse_db(&db).into_iter().map(|r| rebuild(&root, &r, &scripts, &triggers, release)).collect()
}

/// `triggers`: a package's identity (`Q1...`) -> the paths its trigger watches.
fn install_triggers(root: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(root.join("lib/apk/db/triggers"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(id, t)| (id.to_string(), t.to_string())))
        .collect()
}

/// `scripts.tar.gz`: `<name>-<version>.<id>.<script>` -> bytes.
fn install_scripts(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let file = std::fs::File::open(root.join("lib/apk/db/scripts.tar.gz")).expect("open the image's scripts.tar.gz");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut scripts = BTreeMap::new();
    for entry in archive.entries().expect("read scripts.tar.gz") {
        let mut entry = entry.expect("a script");
        let name = entry.path().expect("a script's name").to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read a script");
        scripts.insert(name, data);
    }
    scripts
}

fn rebuild(
    root: &Path,
    r: &Record,
    scripts: &BTreeMap<String, Vec<u8>>,
    triggers: &BTreeMap<String, String>,
    release: Release,
) -> Package {
    let name = r.get('P').expect("P:").to_string();
    let version = r.get('V').expect("V:").to_string();
    let list = |key: char| -> Vec<String> {
        r.fields.iter().filter(|(k, _)| *k == key).flat_map(|(_, v)| v.split_whitespace().map(str::to_string)).collect()
    };
    let mut info =
        String::from("# Generated by abuild\n# rebuilt by mingen's sandbox from the image's installed tree\n");
    let mut line = |key: &str, value: &str| info.push_str(&format!("{key} = {value}\n"));
    line("pkgname", &name);
    line("pkgver", &version);
    for (key, field) in [
        ("pkgdesc", 'T'),
        ("url", 'U'),
        ("builddate", 't'),
        ("packager", 'm'),
        ("size", 'I'),
        ("arch", 'A'),
        ("origin", 'o'),
        ("commit", 'c'),
        ("maintainer", 'm'),
        ("license", 'L'),
        ("provider_priority", 'k'),
    ] {
        if let Some(v) = r.get(field) {
            line(key, v);
        }
    }
    for (key, field) in [("replaces", 'r'), ("provides", 'p'), ("depend", 'D')] {
        for v in list(field) {
            line(key, &v);
        }
    }
    let install_if = list('i');
    if !install_if.is_empty() {
        line("install_if", &install_if.join(" "));
    }
    let id = r.get('C').unwrap_or_default();
    if let Some(t) = triggers.get(id) {
        line("triggers", t);
    }
    let prefix = format!("{name}-{version}.");
    let own_scripts: Vec<(String, Vec<u8>)> = scripts
        .iter()
        .filter_map(|(n, d)| {
            let rest = n.strip_prefix(&prefix)?;
            let kind = rest.rsplit('.').next()?;
            Some((format!(".{kind}"), d.clone()))
        })
        .collect();

    let mut entries = BTreeMap::new();
    for (path, is_dir, mode) in &r.paths {
        let full = root.join(path);
        let meta = std::fs::symlink_metadata(&full)
            .unwrap_or_else(|e| panic!("the image's {path} (package {name}) is missing: {e}"));
        let content = if *is_dir {
            Content::Dir
        } else if meta.file_type().is_symlink() {
            Content::Link(std::fs::read_link(&full).expect("readlink").to_string_lossy().into_owned())
        } else {
            let shared = paths::shared_file(path, release);
            let from = if path.starts_with("etc/") && shared.is_file() { shared } else { full.clone() };
            Content::File(std::fs::read(&from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())))
        };
        let default = if *is_dir { 0o755 } else { 0o644 };
        entries.insert(path.clone(), Entry { mode: mode.unwrap_or(default), content });
    }
    Package {
        name,
        version,
        size: r.get('I').and_then(|s| s.parse().ok()).unwrap_or(0),
        depends: Vec::new(),
        install_if: Vec::new(),
        provides: Vec::new(),
        provider_priority: None,
        shared_dirs: Vec::new(),
        entries,
        own_info: Some(info),
        scripts: own_scripts,
    }
}
