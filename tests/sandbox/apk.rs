//! The local apk repository: reads `packages.toml`, builds real `.apk` files
//! from it, indexes them with the real `apk index` in a minirootfs chroot and
//! signs the index with a test RSA key, once per release per test process.
//!
//! Package format (apk-tools 2.x): two concatenated gzip streams, a control
//! tar holding `.PKGINFO` (end-of-archive blocks cut off) and a data tar
//! whose regular files carry a PAX record `APK-TOOLS.checksum.SHA1`;
//! `.PKGINFO`'s `datahash` is the sha256 of the data gzip stream. A signed
//! index is a gzip'd tar (end blocks cut) holding `.SIGN.RSA.<key name>`,
//! the RSA-SHA1 signature of the unsigned index, followed by that index.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Deserialize;
use sha1::Digest;

use super::{Release, paths, work_dir};

/// File name of the test signing key under /etc/apk/keys.
pub const KEY_NAME: &str = "mingen-sandbox.rsa.pub";
/// Fixed mtime / build date, so that packages are byte-identical across runs.
const EPOCH: u64 = 1_763_000_000;
pub const ARCH: &str = "x86_64";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    package: Vec<RawPackage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    name: String,
    version: String,
    version_322: Option<String>,
    size: u64,
    #[serde(default)]
    depends: Vec<String>,
    #[serde(default)]
    install_if: Vec<String>,
    #[serde(default)]
    provides: Vec<String>,
    provider_priority: Option<u32>,
    #[serde(default)]
    initd: Vec<String>,
    #[serde(default)]
    files: Vec<RawFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    mode: Option<u32>,
    release: Option<String>,
    text: Option<String>,
    local: Option<String>,
    standin: Option<String>,
    shared: Option<String>,
    shared_dir: Option<String>,
    bytes: Option<u64>,
    link: Option<String>,
    #[serde(default)]
    dir: bool,
}

/// One entry of a package's data tar.
pub(super) enum Content {
    Dir,
    File(Vec<u8>),
    Link(String),
}

pub(super) struct Entry {
    pub(super) mode: u32,
    pub(super) content: Content,
}

/// A package, checked and resolved for one release.
pub struct Package {
    pub name: String,
    pub version: String,
    pub(super) size: u64,
    pub(super) depends: Vec<String>,
    pub(super) install_if: Vec<String>,
    pub(super) provides: Vec<String>,
    pub(super) provider_priority: Option<u32>,
    /// Directories (absolute) filled whole from a `shared/` directory.
    pub(super) shared_dirs: Vec<String>,
    /// Path without the leading slash -> entry.
    pub(super) entries: BTreeMap<String, Entry>,
    /// For a package rebuilt from the image: its own `.PKGINFO` lines (all but
    /// `datahash`) and install scripts (`.post-install`, `.trigger`, ...).
    pub(super) own_info: Option<String>,
    pub(super) scripts: Vec<(String, Vec<u8>)>,
}

/// The signed repository of one release, ready to be copied into a host.
pub struct Repo {
    /// Holds `x86_64/APKINDEX.tar.gz` and the packages.
    pub dir: PathBuf,
    /// The public key to install as /etc/apk/keys/KEY_NAME.
    pub public_key: PathBuf,
    /// Every path (absolute) that some package of the catalog ships.
    pub package_paths: Vec<String>,
    /// Directories (absolute) that a package ships whole from `shared/`:
    /// the release's own copy, so nothing else may be laid into them.
    pub shared_dirs: Vec<String>,
}

/// The repository for `release`, built on first use in this process.
pub fn repo(release: Release) -> &'static Repo {
    static R322: OnceLock<Repo> = OnceLock::new();
    static R323: OnceLock<Repo> = OnceLock::new();
    let cell = match release {
        Release::V3_22 => &R322,
        Release::V3_23 => &R323,
    };
    cell.get_or_init(|| build_repo(release))
}

/// Reads and checks the catalog for `release`.
pub fn catalog(release: Release) -> Vec<Package> {
    let path = paths::sandbox().join("packages.toml");
    let text = std::fs::read_to_string(&path).expect("read tests/sandbox/packages.toml");
    let raw: RawCatalog = toml::from_str(&text).expect("parse tests/sandbox/packages.toml");
    raw.package.into_iter().map(|p| resolve(p, release)).collect()
}

fn resolve(raw: RawPackage, release: Release) -> Package {
    let version = match (release, raw.version_322) {
        (Release::V3_22, Some(v)) => v,
        _ => raw.version,
    };
    let mut entries = BTreeMap::new();
    let mut shared_dirs = Vec::new();
    for spec in &raw.initd {
        let mut parts = spec.splitn(3, ':');
        let svc = parts.next().unwrap_or_default();
        let (command, args) = (parts.next(), parts.next());
        let mut script = format!(
            "#!/sbin/openrc-run\n# sandbox stub: the rc-service stand-in keeps this service's state\n\ndescription=\"{svc}\"\n"
        );
        if let Some(cmd) = command {
            script.push_str(&format!("command={cmd}\n"));
        }
        if let Some(args) = args {
            script.push_str(&format!("command_args=\"{args}\"\n"));
        }
        insert(&mut entries, &format!("/etc/init.d/{svc}"), 0o755, Content::File(script.into_bytes()));
    }
    for f in raw.files {
        if let Some(only) = &f.release
            && Release::parse(only) != release
        {
            continue;
        }
        let mode = f.mode.unwrap_or(if f.dir { 0o755 } else { 0o644 });
        let content = if let Some(text) = f.text {
            Content::File(text.into_bytes())
        } else if let Some(local) = f.local {
            Content::File(read(&paths::sandbox().join(local)))
        } else if let Some(name) = f.standin {
            Content::File(read(&paths::sandbox().join("standins").join(name)))
        } else if let Some(rel) = f.shared {
            Content::File(read(&paths::shared_file(&rel, release)))
        } else if let Some(rel) = f.shared_dir {
            let dir = paths::shared_file(&rel, release);
            let mut names: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
                .map(|e| e.expect("dir entry").file_name().into_string().expect("utf-8 name"))
                .collect();
            names.sort();
            shared_dirs.push(f.path.clone());
            insert(&mut entries, &f.path, 0o755, Content::Dir);
            for name in names {
                let content = Content::File(read(&dir.join(&name)));
                insert(&mut entries, &format!("{}/{name}", f.path), 0o644, content);
            }
            continue;
        } else if let Some(n) = f.bytes {
            Content::File(filler(&raw.name, &f.path, n))
        } else if let Some(target) = f.link {
            Content::Link(target)
        } else if f.dir {
            Content::Dir
        } else {
            panic!("packages.toml: {} {}: no content given", raw.name, f.path);
        };
        insert(&mut entries, &f.path, mode, content);
    }
    Package {
        name: raw.name,
        version,
        size: raw.size,
        depends: raw.depends,
        install_if: raw.install_if,
        provides: raw.provides,
        provider_priority: raw.provider_priority,
        shared_dirs,
        entries,
        own_info: None,
        scripts: Vec::new(),
    }
}

/// Adds an entry and its parent directories (0755) to a package.
fn insert(entries: &mut BTreeMap<String, Entry>, path: &str, mode: u32, content: Content) {
    let rel = path.trim_start_matches('/').to_string();
    let mut parent = Path::new(&rel).parent();
    while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
        let key = dir.to_str().expect("utf-8 path").to_string();
        entries.entry(key).or_insert(Entry { mode: 0o755, content: Content::Dir });
        parent = dir.parent();
    }
    entries.insert(rel, Entry { mode, content });
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `n` bytes of deterministic, compressible filler naming its package and path.
fn filler(pkg: &str, path: &str, n: u64) -> Vec<u8> {
    let line = format!("sandbox filler: {pkg} {path}\n");
    line.bytes().cycle().take(n as usize).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(EPOCH);
    h.set_username("root").expect("username");
    h.set_groupname("root").expect("groupname");
    h
}

/// A PAX extended-header record: "<len> <key>=<value>\n", len counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// A tar holding one regular file, without its end-of-archive blocks.
fn cut_tar(name: &str, data: &[u8]) -> Vec<u8> {
    cut_tar_of(&[(name, data)])
}

/// A tar holding regular files in order, without its end-of-archive blocks.
fn cut_tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mode = if name.starts_with(".PKGINFO") { 0o644 } else { 0o755 };
        let mut h = tar_header(tar::EntryType::Regular, mode, data.len() as u64);
        b.append_data(&mut h, name, *data).expect("tar append");
    }
    let mut bytes = b.into_inner().expect("tar finish");
    bytes.truncate(bytes.len() - 1024);
    bytes
}

/// The PAX header abuild-tar puts before a file or symlink: the sha1 of its
/// content (of its target, for a symlink).
fn append_checksum(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let sum = hex::encode(sha1::Sha1::digest(data));
    let record = pax_record("APK-TOOLS.checksum.SHA1", &sum);
    let mut x = tar_header(tar::EntryType::XHeader, 0o644, record.len() as u64);
    let pax_name = format!("PaxHeaders/{}", path.rsplit('/').next().unwrap_or(path));
    b.append_data(&mut x, pax_name, record.as_slice()).expect("tar pax");
}

impl Package {
    pub fn file_name(&self) -> String {
        format!("{}-{}.apk", self.name, self.version)
    }

    /// The paths this package installs (absolute).
    pub fn paths(&self) -> impl Iterator<Item = String> + '_ {
        self.entries.keys().map(|p| format!("/{p}"))
    }

    fn data_tar(&self) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, e) in &self.entries {
            match &e.content {
                Content::Dir => {
                    let mut h = tar_header(tar::EntryType::Directory, e.mode, 0);
                    b.append_data(&mut h, format!("{path}/"), std::io::empty()).expect("tar dir");
                }
                Content::File(data) => {
                    append_checksum(&mut b, path, data);
                    let mut h = tar_header(tar::EntryType::Regular, e.mode, data.len() as u64);
                    b.append_data(&mut h, path, data.as_slice()).expect("tar file");
                }
                Content::Link(target) => {
                    append_checksum(&mut b, path, target.as_bytes());
                    let mut h = tar_header(tar::EntryType::Symlink, 0o777, 0);
                    b.append_link(&mut h, path, target).expect("tar symlink");
                }
            }
        }
        b.into_inner().expect("tar finish")
    }

    /// The whole .apk: control gzip stream followed by data gzip stream.
    pub fn build(&self) -> Vec<u8> {
        let data = gzip(&self.data_tar());
        let datahash = hex::encode(sha2::Sha256::digest(&data));
        if let Some(own) = &self.own_info {
            let info = format!("{own}datahash = {datahash}\n");
            let mut control: Vec<(&str, &[u8])> = vec![(".PKGINFO", info.as_bytes())];
            control.extend(self.scripts.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
            let mut apk = gzip(&cut_tar_of(&control));
            apk.extend_from_slice(&data);
            return apk;
        }
        let mut info = format!(
            "# Generated by abuild 3.15.0\n# sandbox package for mingen's tests\npkgname = {}\npkgver = {}\npkgdesc = sandbox {}\nurl = \nbuilddate = {EPOCH}\npackager = mingen sandbox\nsize = {}\narch = {ARCH}\norigin = {}\nlicense = MIT\n",
            self.name, self.version, self.name, self.size, self.name
        );
        for d in &self.depends {
            info.push_str(&format!("depend = {d}\n"));
        }
        for p in &self.provides {
            info.push_str(&format!("provides = {p}\n"));
        }
        if let Some(prio) = self.provider_priority {
            info.push_str(&format!("provider_priority = {prio}\n"));
        }
        if !self.install_if.is_empty() {
            info.push_str(&format!("install_if = {}\n", self.install_if.join(" ")));
        }
        info.push_str(&format!("datahash = {datahash}\n"));
        let mut apk = gzip(&cut_tar(".PKGINFO", info.as_bytes()));
        apk.extend_from_slice(&data);
        apk
    }
}

/// The test RSA key pair, made once per process: (private PEM, public PEM).
fn signing_key() -> &'static (PathBuf, PathBuf) {
    static KEY: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = work_dir().join("key");
        std::fs::create_dir_all(&dir).expect("create key dir");
        let private = dir.join("mingen-sandbox.rsa");
        let public = dir.join(KEY_NAME);
        super::check(Command::new("openssl").args(["genrsa", "-out"]).arg(&private).arg("2048"), "openssl genrsa");
        super::check(
            Command::new("openssl").args(["rsa", "-pubout", "-in"]).arg(&private).arg("-out").arg(&public),
            "openssl rsa -pubout",
        );
        (private, public)
    })
}

/// Names of the packages installed in the real 3.23.6 image.
pub fn image_packages() -> BTreeSet<String> {
    let db = super::image::root().join("lib/apk/db/installed");
    let text = std::fs::read_to_string(&db).unwrap_or_else(|e| panic!("read {}: {e}", db.display()));
    text.lines().filter_map(|l| l.strip_prefix("P:")).map(str::to_string).collect()
}

fn build_repo(release: Release) -> Repo {
    let started = std::time::Instant::now();
    let mut packages = catalog(release);
    if release == Release::V3_23 {
        // What the image really has is never shadowed by a stand-in; its own
        // packages are in the repository, so that a removed one can come back.
        let real = image_packages();
        packages.retain(|p| !real.contains(&p.name));
    }
    // Index inside a private minirootfs, with the real apk.
    let tools = work_dir().join(format!("index-{}", release.as_str()));
    super::extract_minirootfs(&tools);
    let arch_dir = tools.join("repo").join(ARCH);
    std::fs::create_dir_all(&arch_dir).expect("create repo dir");
    let mut package_paths = Vec::new();
    let mut shared_dirs = Vec::new();
    for p in &packages {
        std::fs::write(arch_dir.join(p.file_name()), p.build()).expect("write .apk");
        package_paths.extend(p.paths());
        shared_dirs.extend(p.shared_dirs.iter().cloned());
    }
    let mut count = packages.len();
    if release == Release::V3_23 {
        for e in std::fs::read_dir(super::repack::image_apks(release)).expect("read the rebuilt packages").flatten() {
            let to = arch_dir.join(e.file_name());
            if std::fs::hard_link(e.path(), &to).is_err() {
                std::fs::copy(e.path(), &to).expect("copy a rebuilt package");
            }
            count += 1;
        }
    }
    super::check(
        Command::new("chroot").arg(&tools).args([
            "/bin/sh",
            "-c",
            "cd /repo/x86_64 && apk index --quiet --allow-untrusted -d sandbox -o /repo/unsigned.tar.gz *.apk",
        ]),
        "apk index",
    );
    let unsigned = tools.join("repo/unsigned.tar.gz");
    let (private, public) = signing_key();
    let sig = tools.join("repo/unsigned.sig");
    super::check(
        Command::new("openssl").args(["dgst", "-sha1", "-sign"]).arg(private).arg("-out").arg(&sig).arg(&unsigned),
        "openssl dgst -sign",
    );
    let mut index = gzip(&cut_tar(&format!(".SIGN.RSA.{KEY_NAME}"), &read(&sig)));
    index.extend_from_slice(&read(&unsigned));
    std::fs::write(arch_dir.join("APKINDEX.tar.gz"), index).expect("write APKINDEX");
    std::fs::remove_file(&unsigned).expect("remove unsigned index");
    std::fs::remove_file(&sig).expect("remove signature");
    eprintln!("sandbox: repository for {} built ({} packages) in {:.2?}", release.as_str(), count, started.elapsed());
    Repo { dir: tools.join("repo"), public_key: public.clone(), package_paths, shared_dirs }
}
