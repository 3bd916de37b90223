//! What a host does to a validator's node state on its disk, shared by the end-to-end tests
//! that play it (`start.rs` in process mode, `vm.rs` on a VM's disk).
#![allow(dead_code)]

use std::path::Path;

/// Appends a record to the WAL of the store in `dir` at the height the node replays next (the
/// one after its last stored block), framed by the store's own code under a key the host
/// knows (the old public checksum's equivalent).
pub fn append_wal_record(dir: &Path) {
    let host = bulwark_store::Store::open(dir).expect("the store opens");
    let height = bulwark_store::blocks::BlockStore::open(&host)
        .expect("the block store opens")
        .latest_height()
        .expect("its latest height reads")
        .expect("blocks were stored")
        + 1;
    bulwark_store::wal::Wal::open(&host)
        .expect("the WAL opens")
        .append(height, b"an own_block the host chose")
        .expect("the record is appended");
    host.flush().expect("the store flushes");
}
