//! Smoke tests of the sandbox host harness itself (tests/sandbox/): hosts
//! build, the real apk accepts the local signed repository, the stand-ins
//! keep state the way the real tools do, and tree() sees changes.

mod sandbox;

use sandbox::Host;

#[test]
fn guide_host_builds_and_apk_sees_openssh() {
    if !sandbox::require() {
        return;
    }
    let host = Host::build("guide");
    let out = host.run("apk info -e openssh-server", &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "openssh-server"
    );
}
