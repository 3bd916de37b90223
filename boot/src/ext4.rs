//! A filesystem the guest makes itself: an ext4 volume (4 KiB blocks, extents, an internal
//! jbd2 journal, sparse superblock backups) written block by block onto the decrypted data
//! device, so the kernel only ever mounts metadata the guest wrote. Pure: the formatter hands
//! each block to a writer and never reads the device. `e2fsck -fn` checks its output in the
//! tests.

/// Filesystem block size.
pub const BLOCK: usize = 4096;
const BLOCKS_PER_GROUP: u64 = 8 * BLOCK as u64;
const INODE_SIZE: usize = 256;
/// One inode per 64 KiB: the node keeps few, large files.
const BYTES_PER_INODE: u64 = 64 * 1024;
const INODES_PER_GROUP: u64 = BLOCKS_PER_GROUP * BLOCK as u64 / BYTES_PER_INODE;
const INODE_TABLE_BLOCKS: u64 = INODES_PER_GROUP * INODE_SIZE as u64 / BLOCK as u64;
const DESCRIPTOR_SIZE: u64 = 32;
const ROOT_INODE: u32 = 2;
const JOURNAL_INODE: u32 = 8;
const LOST_AND_FOUND_INODE: u32 = 11;
const FIRST_FREE_INODE: u32 = 12;
/// The smallest volume formatted: room for the metadata, the journal and some data.
pub const MIN_BLOCKS: u64 = 2048;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_EXTENTS: u32 = 0x40;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const INODE_FLAG_EXTENTS: u32 = 0x80000;
/// `s_errors`: remount read-only, so a node whose disk failed cannot write on and stops.
const ERRORS_REMOUNT_RO: u16 = 2;

/// Why a volume could not be formatted.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The device is too small (in blocks) to hold a volume.
    #[error("the data device has {0} blocks of 4 KiB; at least {MIN_BLOCKS} are needed")]
    TooSmall(u64),
    /// The device is larger than a 32-bit block count reaches.
    #[error("the data device has {0} blocks of 4 KiB; at most 2^32 are supported")]
    TooLarge(u64),
    /// Writing a block failed.
    #[error("writing block {block}: {source}")]
    Write {
        /// The block.
        block: u64,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The shape of a volume over a device of a given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Blocks in the volume (a too-small last group is left out).
    pub blocks: u64,
    /// Block groups.
    pub groups: u64,
    /// Blocks of group descriptors after each superblock copy.
    pub descriptor_blocks: u64,
    /// Journal length in blocks.
    pub journal_blocks: u64,
}

/// Whether group `g` carries a superblock copy (sparse_super: 0, 1 and powers of 3, 5, 7).
fn has_superblock(g: u64) -> bool {
    if g <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&base| {
        let mut n = base;
        while n < g {
            n *= base;
        }
        n == g
    })
}

impl Layout {
    /// The layout for a device of `device_blocks` blocks.
    pub fn for_device(device_blocks: u64) -> Result<Self, FormatError> {
        if device_blocks < MIN_BLOCKS {
            return Err(FormatError::TooSmall(device_blocks));
        }
        if device_blocks > u64::from(u32::MAX) {
            return Err(FormatError::TooLarge(device_blocks));
        }
        let mut blocks = device_blocks;
        let mut groups = blocks.div_ceil(BLOCKS_PER_GROUP);
        let descriptor_blocks_before = (groups * DESCRIPTOR_SIZE).div_ceil(BLOCK as u64);
        let last = blocks - (groups - 1) * BLOCKS_PER_GROUP;
        // A last group that cannot hold its own metadata and some data is left out, as mke2fs
        // does.
        if groups > 1 && last < 1 + descriptor_blocks_before + 2 + INODE_TABLE_BLOCKS + 64 {
            groups -= 1;
            blocks = groups * BLOCKS_PER_GROUP;
        }
        // The group count may have fallen below a multiple of 128: fewer descriptor blocks.
        let descriptor_blocks = (groups * DESCRIPTOR_SIZE).div_ceil(BLOCK as u64);
        let journal_blocks = match blocks {
            ..32_768 => 1024,
            32_768..262_144 => 4096,
            262_144..524_288 => 8192,
            _ => 16_384,
        };
        Ok(Layout {
            blocks,
            groups,
            descriptor_blocks,
            journal_blocks,
        })
    }

    fn group_start(&self, g: u64) -> u64 {
        g * BLOCKS_PER_GROUP
    }

    fn group_blocks(&self, g: u64) -> u64 {
        (self.blocks - self.group_start(g)).min(BLOCKS_PER_GROUP)
    }

    /// The first block after the superblock copy and descriptors of group `g`.
    fn after_superblock(&self, g: u64) -> u64 {
        let start = self.group_start(g);
        if has_superblock(g) {
            start + 1 + self.descriptor_blocks
        } else {
            start
        }
    }

    fn block_bitmap(&self, g: u64) -> u64 {
        self.after_superblock(g)
    }

    fn inode_bitmap(&self, g: u64) -> u64 {
        self.after_superblock(g) + 1
    }

    fn inode_table(&self, g: u64) -> u64 {
        self.after_superblock(g) + 2
    }

    /// The first block of group `g` free of metadata.
    fn first_data(&self, g: u64) -> u64 {
        self.inode_table(g) + INODE_TABLE_BLOCKS
    }

    fn root_block(&self) -> u64 {
        self.first_data(0)
    }

    fn lost_and_found_block(&self) -> u64 {
        self.first_data(0) + 1
    }

    fn journal_start(&self) -> u64 {
        self.first_data(0) + 2
    }

    /// Blocks in use in group `g` right after formatting.
    fn used_blocks(&self, g: u64) -> u64 {
        let metadata = self.first_data(g) - self.group_start(g);
        if g == 0 {
            metadata + 2 + self.journal_blocks
        } else {
            metadata
        }
    }

    fn used_inodes(&self, g: u64) -> u64 {
        if g == 0 {
            u64::from(FIRST_FREE_INODE - 1)
        } else {
            0
        }
    }

    fn free_blocks(&self) -> u64 {
        (0..self.groups)
            .map(|g| self.group_blocks(g) - self.used_blocks(g))
            .sum()
    }

    fn inodes(&self) -> u64 {
        self.groups * INODES_PER_GROUP
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put32be(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Every count below fits its field: the layout bounds blocks by 2^32 and groups by 2^17.
fn lo(v: u64) -> u32 {
    v as u32
}

/// The inode's i_block area holding one extent of `len` blocks at `start`.
fn extent_tree(start: u64, len: u64) -> [u8; 60] {
    let mut t = [0u8; 60];
    put16(&mut t, 0, 0xF30A); // eh_magic
    put16(&mut t, 2, 1); // eh_entries
    put16(&mut t, 4, 4); // eh_max
    put16(&mut t, 6, 0); // eh_depth
    put32(&mut t, 12, 0); // ee_block
    put16(&mut t, 16, len as u16); // ee_len (≤ 32,768 by the layout)
    put16(&mut t, 18, (start >> 32) as u16);
    put32(&mut t, 20, lo(start));
    t
}

struct InodeSpec {
    mode: u16,
    links: u16,
    size: u64,
    start: u64,
    blocks: u64,
}

fn inode(spec: &InodeSpec) -> [u8; INODE_SIZE] {
    let mut i = [0u8; INODE_SIZE];
    put16(&mut i, 0, spec.mode);
    put32(&mut i, 4, lo(spec.size));
    put16(&mut i, 26, spec.links);
    put32(&mut i, 28, lo(spec.blocks * (BLOCK as u64 / 512)));
    put32(&mut i, 32, INODE_FLAG_EXTENTS);
    i[40..100].copy_from_slice(&extent_tree(spec.start, spec.blocks));
    put32(&mut i, 108, (spec.size >> 32) as u32);
    put16(&mut i, 128, 32); // i_extra_isize
    i
}

fn superblock(layout: &Layout, uuid: [u8; 16], group: u64) -> [u8; 1024] {
    let mut s = [0u8; 1024];
    put32(&mut s, 0, lo(layout.inodes()));
    put32(&mut s, 4, lo(layout.blocks));
    put32(&mut s, 12, lo(layout.free_blocks()));
    put32(
        &mut s,
        16,
        lo(layout.inodes() - u64::from(FIRST_FREE_INODE - 1)),
    );
    put32(&mut s, 20, 0); // s_first_data_block
    put32(&mut s, 24, 2); // s_log_block_size: 1024 << 2
    put32(&mut s, 28, 2); // s_log_cluster_size
    put32(&mut s, 32, lo(BLOCKS_PER_GROUP));
    put32(&mut s, 36, lo(BLOCKS_PER_GROUP));
    put32(&mut s, 40, lo(INODES_PER_GROUP));
    put16(&mut s, 54, 0xFFFF); // s_max_mnt_count: never force a check
    put16(&mut s, 56, 0xEF53);
    put16(&mut s, 58, 1); // s_state: clean
    put16(&mut s, 60, ERRORS_REMOUNT_RO);
    put32(&mut s, 76, 1); // s_rev_level: dynamic
    put32(&mut s, 84, FIRST_FREE_INODE - 1); // s_first_ino
    put16(&mut s, 88, INODE_SIZE as u16);
    put16(&mut s, 90, group as u16);
    put32(&mut s, 92, COMPAT_HAS_JOURNAL);
    put32(&mut s, 96, INCOMPAT_FILETYPE | INCOMPAT_EXTENTS);
    put32(&mut s, 100, RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE);
    s[104..120].copy_from_slice(&uuid);
    s[120..127].copy_from_slice(b"bulwark");
    put32(&mut s, 224, JOURNAL_INODE);
    // s_jnl_blocks: a copy of the journal inode's block map and size, for e2fsck.
    s[268..328].copy_from_slice(&extent_tree(layout.journal_start(), layout.journal_blocks));
    put32(&mut s, 332, lo(layout.journal_blocks * BLOCK as u64));
    s[253] = 1; // s_jnl_backup_type: EXT3_JNL_BACKUP_BLOCKS
    put16(&mut s, 348, 32); // s_min_extra_isize
    put16(&mut s, 350, 32); // s_want_extra_isize
    s
}

fn descriptors(layout: &Layout) -> Vec<u8> {
    let mut d = vec![0u8; (layout.descriptor_blocks as usize) * BLOCK];
    for g in 0..layout.groups {
        let at = (g * DESCRIPTOR_SIZE) as usize;
        let e = &mut d[at..at + DESCRIPTOR_SIZE as usize];
        put32(e, 0, lo(layout.block_bitmap(g)));
        put32(e, 4, lo(layout.inode_bitmap(g)));
        put32(e, 8, lo(layout.inode_table(g)));
        put16(
            e,
            12,
            (layout.group_blocks(g) - layout.used_blocks(g)) as u16,
        );
        put16(e, 14, (INODES_PER_GROUP - layout.used_inodes(g)) as u16);
        put16(e, 16, if g == 0 { 2 } else { 0 }); // directories: / and lost+found
    }
    d
}

/// A bitmap block with the first `used` bits set, and every bit from `valid` on (the padding
/// past the group's end).
fn bitmap(used: u64, valid: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    for bit in (0..used).chain(valid..8 * BLOCK as u64) {
        b[(bit / 8) as usize] |= 1 << (bit % 8);
    }
    b
}

fn directory(entries: &[(u32, &[u8])]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    let mut at = 0usize;
    for (n, (ino, name)) in entries.iter().enumerate() {
        let len = (8 + name.len()).div_ceil(4) * 4;
        let rec_len = if n + 1 == entries.len() {
            BLOCK - at
        } else {
            len
        };
        put32(&mut b, at, *ino);
        put16(&mut b, at + 4, rec_len as u16);
        b[at + 6] = name.len() as u8;
        b[at + 7] = 2; // file type: directory
        b[at + 8..at + 8 + name.len()].copy_from_slice(name);
        at += rec_len;
    }
    b
}

fn journal_superblock(layout: &Layout, uuid: [u8; 16]) -> Vec<u8> {
    let mut j = vec![0u8; BLOCK];
    put32be(&mut j, 0, 0xC03B_3998); // h_magic
    put32be(&mut j, 4, 4); // h_blocktype: superblock v2
    put32be(&mut j, 12, BLOCK as u32); // s_blocksize
    put32be(&mut j, 16, lo(layout.journal_blocks)); // s_maxlen
    put32be(&mut j, 20, 1); // s_first
    put32be(&mut j, 24, 1); // s_sequence
    put32be(&mut j, 28, 0); // s_start: empty
    j[48..64].copy_from_slice(&uuid);
    put32be(&mut j, 64, 1); // s_nr_users
    j[256..272].copy_from_slice(&uuid);
    j
}

/// Formats a volume over `device_blocks` blocks, handing every block it writes to `write`
/// (block number, 4,096 bytes). Writes all metadata, including every inode table and the
/// whole journal, so nothing the kernel reads was left unwritten. Returns the layout.
pub fn format(
    device_blocks: u64,
    uuid: [u8; 16],
    mut write: impl FnMut(u64, &[u8]) -> std::io::Result<()>,
) -> Result<Layout, FormatError> {
    let layout = Layout::for_device(device_blocks)?;
    let mut put = |block: u64, bytes: &[u8]| {
        write(block, bytes).map_err(|source| FormatError::Write { block, source })
    };
    let zero = vec![0u8; BLOCK];
    let gdt = descriptors(&layout);
    for g in 0..layout.groups {
        let start = layout.group_start(g);
        if has_superblock(g) {
            let mut first = vec![0u8; BLOCK];
            // The primary superblock sits 1,024 bytes into block 0; copies start their block.
            let at = if g == 0 { 1024 } else { 0 };
            first[at..at + 1024].copy_from_slice(&superblock(&layout, uuid, g));
            put(start, &first)?;
            for (i, chunk) in gdt.chunks(BLOCK).enumerate() {
                put(start + 1 + i as u64, chunk)?;
            }
        }
        let used = layout.used_blocks(g);
        put(
            layout.block_bitmap(g),
            &bitmap(used, layout.group_blocks(g)),
        )?;
        put(
            layout.inode_bitmap(g),
            &bitmap(layout.used_inodes(g), INODES_PER_GROUP),
        )?;
        for b in 0..INODE_TABLE_BLOCKS {
            put(layout.inode_table(g) + b, &zero)?;
        }
    }
    let mut table = vec![0u8; (u64::from(FIRST_FREE_INODE) as usize) * INODE_SIZE];
    let dir = |start| InodeSpec {
        mode: 0o040755,
        links: 3,
        size: BLOCK as u64,
        start,
        blocks: 1,
    };
    for (ino, spec) in [
        (ROOT_INODE, dir(layout.root_block())),
        (
            JOURNAL_INODE,
            InodeSpec {
                mode: 0o100600,
                links: 1,
                size: layout.journal_blocks * BLOCK as u64,
                start: layout.journal_start(),
                blocks: layout.journal_blocks,
            },
        ),
        (
            LOST_AND_FOUND_INODE,
            InodeSpec {
                mode: 0o040700,
                links: 2,
                ..dir(layout.lost_and_found_block())
            },
        ),
    ] {
        let at = (ino as usize - 1) * INODE_SIZE;
        table[at..at + INODE_SIZE].copy_from_slice(&inode(&spec));
    }
    for (i, chunk) in table.chunks(BLOCK).enumerate() {
        let mut block = zero.clone();
        block[..chunk.len()].copy_from_slice(chunk);
        put(layout.inode_table(0) + i as u64, &block)?;
    }
    put(
        layout.root_block(),
        &directory(&[
            (ROOT_INODE, b"."),
            (ROOT_INODE, b".."),
            (LOST_AND_FOUND_INODE, b"lost+found"),
        ]),
    )?;
    put(
        layout.lost_and_found_block(),
        &directory(&[(LOST_AND_FOUND_INODE, b"."), (ROOT_INODE, b"..")]),
    )?;
    put(layout.journal_start(), &journal_superblock(&layout, uuid))?;
    for b in 1..layout.journal_blocks {
        put(layout.journal_start() + b, &zero)?;
    }
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_copies_follow_sparse_super() {
        let with: Vec<u64> = (0..100).filter(|&g| has_superblock(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn a_too_small_last_group_is_left_out() {
        let l = Layout::for_device(2 * BLOCKS_PER_GROUP + 100).unwrap();
        assert_eq!((l.groups, l.blocks), (2, 2 * BLOCKS_PER_GROUP));
        let l = Layout::for_device(2 * BLOCKS_PER_GROUP + 1000).unwrap();
        assert_eq!(l.groups, 3);
        assert!(matches!(
            Layout::for_device(MIN_BLOCKS - 1),
            Err(FormatError::TooSmall(_))
        ));
    }
}
