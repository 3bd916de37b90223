//! The guest's view of the host configuration: untrusted bytes from `fw_cfg` become a checked
//! configuration or a typed error, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_boot::{BootError, HostConfig};

const GOOD: &str = r#"{"version":1,"data_disk":"/dev/vda"}"#;

#[test]
fn a_well_formed_configuration_is_accepted() {
    let c = HostConfig::parse(GOOD.as_bytes()).unwrap();
    assert_eq!(c.data_disk, "/dev/vda");
}

#[test]
fn anything_else_is_a_typed_error() {
    let bad = [
        r#"{"version":2,"data_disk":"/dev/vda"}"#,
        r#"{"version":1,"data_disk":"/dev/sda"}"#,
        r#"{"version":1,"data_disk":"/dev/vda/../x"}"#,
        r#"{"version":1,"data_disk":"/dev/vdaa"}"#,
        r#"{"version":1,"data_disk":"/dev/vda","shell":"/bin/sh"}"#,
        r#"{"version":1}"#,
        "",
        "\u{0}\u{1}\u{2}",
        "[]",
    ];
    for b in bad {
        assert!(
            matches!(HostConfig::parse(b.as_bytes()), Err(BootError::Invalid(_))),
            "accepted {b:?}"
        );
    }
}
