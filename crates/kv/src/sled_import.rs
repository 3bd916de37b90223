//! Databases earlier versions wrote with sled, imported into fjall when they are opened.
//!
//! An import writes a marker that it started, copies every entry of sled's default tree (the
//! keyspaces, after an even older layout with one sled tree per name has moved into them) into
//! fjall in bounded steps, then writes a marker that it finished and syncs, and only then
//! deletes sled's files (`conf` last). A crash before the second marker leaves sled's files
//! whole, and the next open empties fjall and copies again (sled may have changed since, if an
//! earlier version ran in between); a crash after it leaves sled's files to be deleted. A sled
//! database beside a fjall database that holds data and no marker is two histories: refused.

use crate::{keyspace, lsm_error, prefixed, KvError, Lsm};
use std::path::Path;

/// The name sled gives its default tree (never a keyspace's old tree).
const SLED_DEFAULT_TREE: &[u8] = b"__sled__default";

/// Entries, and about how many bytes, copied per step (values can be whole blocks: the step is
/// bounded by bytes too).
const STEP: usize = 4096;
const STEP_BYTES: usize = 16 << 20;

/// The sled tree that marks a database laid out in keyspaces.
const LAYOUT_TREE: &[u8] = b"__bulwark_layout";

/// The tree of the import's markers, and their keys.
const MARKER_TREE: &str = "__bulwark_layout";
const STARTED_KEY: &[u8] = b"import-from-sled-started";
const IMPORTED_KEY: &[u8] = b"imported-from-sled";

/// The files and folders sled 0.34 keeps in a database's directory, in the order they are
/// deleted: `conf` and `db`, by which a sled database is recognised, last.
fn sled_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("snap."))
        {
            files.push(path);
        }
    }
    for name in ["blobs", "db", "conf"] {
        if dir.join(name).try_exists()? {
            files.push(dir.join(name));
        }
    }
    Ok(files)
}

/// Writes `marker` (the only write of its batch) and syncs.
fn mark(dir: &Path, lsm: &Lsm, marker: &[u8]) -> Result<(), KvError> {
    let mut batch = lsm.db.batch();
    batch.insert(&lsm.keyspace, marker.to_vec(), b"1".as_slice());
    lsm.commit(batch, marker.len() as u64 + 1, dir)?;
    lsm.db
        .persist(fjall::PersistMode::SyncAll)
        .map_err(|e| lsm_error(dir, e))
}

/// Removes every entry of `ks`, in bounded steps.
fn clear(dir: &Path, lsm: &Lsm) -> Result<(), KvError> {
    loop {
        let mut batch = lsm.db.batch();
        let mut bytes = 0u64;
        for guard in lsm.keyspace.iter().take(STEP) {
            let key = guard.key().map_err(|e| lsm_error(dir, e))?;
            bytes = bytes.saturating_add(key.len() as u64);
            batch.remove(&lsm.keyspace, key);
        }
        if batch.is_empty() {
            return Ok(());
        }
        lsm.commit(batch, bytes, dir)?;
    }
}

/// Imports the sled database in `dir`, if there is one, into `keyspace` of `db`.
pub(crate) fn import(dir: &Path, lsm: &Lsm) -> Result<(), KvError> {
    let keyspace_handle = &lsm.keyspace;
    let io = |source| KvError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let marker = |key: &[u8]| prefixed(&keyspace(MARKER_TREE).unwrap_or_default(), key);
    let (started, imported) = (marker(STARTED_KEY), marker(IMPORTED_KEY));
    let holds = |key: &[u8]| {
        keyspace_handle
            .contains_key(key)
            .map_err(|e| lsm_error(dir, e))
    };
    if !holds(&imported)? {
        let sled_here = dir.join("conf").try_exists().map_err(io)?
            || dir.join("db").try_exists().map_err(io)?;
        if !sled_here {
            return Ok(());
        }
        if holds(&started)? {
            clear(dir, lsm)?;
        } else if keyspace_handle.iter().next().is_some() {
            return Err(KvError::Corrupt {
                path: dir.to_path_buf(),
                reason: "a sled database beside a fjall database that holds data: two histories"
                    .into(),
            });
        }
        mark(dir, lsm, &started)?;
        copy(dir, lsm)?;
        mark(dir, lsm, &imported)?;
    }
    for file in sled_files(dir).map_err(io)? {
        if file.is_dir() {
            std::fs::remove_dir_all(&file).map_err(io)?;
        } else {
            std::fs::remove_file(&file).map_err(io)?;
        }
    }
    Ok(())
}

/// Copies sled's default tree into fjall, after moving an older layout into keyspaces.
fn copy(dir: &Path, lsm: &Lsm) -> Result<(), KvError> {
    let unreadable = || KvError::Corrupt {
        path: dir.to_path_buf(),
        reason: "the sled database files could not be read".into(),
    };
    // sled panics on some forms of damage instead of returning an error: a damaged database
    // must be a clear error at start, never a crash.
    let opened = std::panic::catch_unwind(|| {
        sled::Config::new()
            .path(dir)
            .cache_capacity(16 << 20)
            .flush_every_ms(None)
            .open()
    })
    .map_err(|_| unreadable())?
    .map_err(|e| sled_error(dir, e))?;
    let copying = std::panic::AssertUnwindSafe(|| -> Result<(), KvError> {
        into_keyspaces(&opened).map_err(|e| sled_error(dir, e))?;
        let mut batch = lsm.db.batch();
        let mut bytes = 0usize;
        for entry in opened.iter() {
            let (k, v) = entry.map_err(|e| sled_error(dir, e))?;
            if k.len() > u16::MAX as usize {
                return Err(KvError::Corrupt {
                    path: dir.to_path_buf(),
                    reason: format!("a sled key of {} bytes, longer than fjall stores", k.len()),
                });
            }
            bytes = bytes.saturating_add(k.len() + v.len());
            batch.insert(&lsm.keyspace, k.to_vec(), v.to_vec());
            if batch.len() == STEP || bytes >= STEP_BYTES {
                let full = std::mem::replace(&mut batch, lsm.db.batch());
                lsm.commit(full, bytes as u64, dir)?;
                bytes = 0;
            }
        }
        lsm.commit(batch, bytes as u64, dir)
    });
    std::panic::catch_unwind(copying).map_err(|_| unreadable())?
}

fn sled_error(path: &Path, e: sled::Error) -> KvError {
    match e {
        sled::Error::Corruption { at, .. } => KvError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("sled found damaged data at {at:?}"),
        },
        sled::Error::Unsupported(reason) => KvError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "not a readable database (damaged, or written by another sled version): {reason}"
            ),
        },
        sled::Error::Io(source) => KvError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => KvError::Backend {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// Moves every tree of a database written with one sled tree per name (earlier versions) into
/// its keyspace of the default tree, then drops the old tree, and marks the database as laid
/// out in keyspaces. Each step moves a bounded run of entries in one sled transaction (inserted
/// under the keyspace, removed from the old tree), so a crash keeps every entry in exactly one
/// place and the next open goes on from there. A marked database with a tree per name beside
/// its keyspaces was written by an earlier version since: two histories, refused.
fn into_keyspaces(db: &sled::Db) -> Result<(), sled::Error> {
    use sled::transaction::TransactionError;
    use sled::Transactional;
    let names = db.tree_names();
    let marked = names.iter().any(|n| n.as_ref() == LAYOUT_TREE);
    for name in names {
        if name.as_ref() == SLED_DEFAULT_TREE || name.as_ref() == LAYOUT_TREE {
            continue;
        }
        let shown = String::from_utf8_lossy(&name).into_owned();
        if marked {
            return Err(sled::Error::Unsupported(format!(
                "a tree named {shown:?} beside the keyspaces: an earlier version wrote to this database after this one"
            )));
        }
        let prefix = std::str::from_utf8(&name)
            .ok()
            .and_then(keyspace)
            .ok_or_else(|| {
                sled::Error::Unsupported(format!(
                    "a tree named {shown:?}, which no Bulwark version writes"
                ))
            })?;
        let old = db.open_tree(&name)?;
        loop {
            let mut step = Vec::new();
            let mut bytes = 0usize;
            for entry in old.iter() {
                let (k, v) = entry?;
                bytes = bytes.saturating_add(k.len() + v.len());
                step.push((k, v));
                if step.len() == STEP || bytes >= STEP_BYTES {
                    break;
                }
            }
            if step.is_empty() {
                break;
            }
            let default: &sled::Tree = db;
            (default, &old)
                .transaction(|(new, old)| {
                    for (k, v) in &step {
                        new.insert(prefixed(&prefix, k), v.clone())?;
                        old.remove(k.clone())?;
                    }
                    Ok(())
                })
                .map_err(|e: TransactionError<()>| match e {
                    TransactionError::Storage(e) => e,
                    TransactionError::Abort(()) => {
                        sled::Error::ReportableBug("moving a tree into its keyspace aborted".into())
                    }
                })?;
        }
        db.flush()?;
        db.drop_tree(&name)?;
    }
    if !marked {
        db.open_tree(LAYOUT_TREE)?
            .insert(b"layout", b"keyspaces/1")?;
    }
    db.flush()?;
    Ok(())
}
