//! An initramfs image: a tree of entries written as an uncompressed `newc` cpio archive (the
//! format the kernel unpacks; no root needed to describe device nodes or ownership).

use anyhow::{Context as _, bail};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir,
    /// Contents from a file on the host.
    File {
        source: PathBuf,
        mode: u32,
    },
    /// Contents given inline.
    Data {
        data: Vec<u8>,
        mode: u32,
    },
    Symlink(String),
    /// A character device (major, minor).
    CharDev(u32, u32),
}

/// Paths inside the image (absolute, `/`-separated) to entries. Parents are created as needed.
#[derive(Default)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    /// Adds `entry` at `path`; a second, different entry at the same path is an error.
    pub fn add(&mut self, path: &str, entry: Entry) -> anyhow::Result<()> {
        let path = path.trim_start_matches('/');
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("bad initramfs path {path:?}");
        }
        let mut parent = String::new();
        for comp in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            match self.entries.get(&parent) {
                None => {
                    self.entries.insert(parent.clone(), Entry::Dir);
                }
                Some(Entry::Dir) => {}
                Some(other) => bail!("initramfs: {parent} is {other:?}, not a directory"),
            }
        }
        match self.entries.get(path) {
            Some(old) if *old == entry => Ok(()),
            Some(Entry::Dir) if entry == Entry::Dir => Ok(()),
            Some(old) => bail!("initramfs: {path} added twice ({old:?} and {entry:?})"),
            None => {
                self.entries.insert(path.to_owned(), entry);
                Ok(())
            }
        }
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches('/'))
    }

    /// Writes the archive to `out`. Returns the number of bytes written.
    pub fn write(&self, out: &Path) -> anyhow::Result<u64> {
        let f =
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut w = Counter {
            inner: io::BufWriter::with_capacity(1 << 20, f),
            n: 0,
        };
        // BTreeMap order puts every directory before what it contains.
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            write_entry(&mut w, ino, path, entry)
                .with_context(|| format!("writing {path} into {}", out.display()))?;
        }
        write_header(&mut w, 0, "TRAILER!!!", 0, 0, 0, (0, 0))?;
        w.inner.flush()?;
        Ok(w.n)
    }
}

struct Counter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

fn pad4(w: &mut Counter<impl Write>) -> io::Result<()> {
    let pad = (4 - (w.n % 4)) % 4;
    w.write_all(&[0u8; 3][..usize::try_from(pad).unwrap_or(0)])
}

fn write_header(
    w: &mut Counter<impl Write>,
    ino: u32,
    name: &str,
    mode: u32,
    nlink: u32,
    size: u64,
    rdev: (u32, u32),
) -> anyhow::Result<()> {
    let size = u32::try_from(size).context("file larger than 4 GiB for cpio")?;
    let namesize = u32::try_from(name.len() + 1).context("name too long")?;
    let fields = [
        ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
    ];
    let mut h = String::with_capacity(110);
    h.push_str("070701");
    for f in fields {
        let _ = write!(h, "{f:08x}");
    }
    w.write_all(h.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad4(w)?;
    Ok(())
}

fn write_entry(
    w: &mut Counter<impl Write>,
    ino: u32,
    path: &str,
    entry: &Entry,
) -> anyhow::Result<()> {
    match entry {
        Entry::Dir => write_header(w, ino, path, S_IFDIR | 0o755, 2, 0, (0, 0)),
        Entry::CharDev(major, minor) => {
            write_header(w, ino, path, S_IFCHR | 0o600, 1, 0, (*major, *minor))
        }
        Entry::Symlink(target) => {
            write_header(
                w,
                ino,
                path,
                S_IFLNK | 0o777,
                1,
                target.len() as u64,
                (0, 0),
            )?;
            w.write_all(target.as_bytes())?;
            Ok(pad4(w)?)
        }
        Entry::Data { data, mode } => {
            write_header(w, ino, path, S_IFREG | mode, 1, data.len() as u64, (0, 0))?;
            w.write_all(data)?;
            Ok(pad4(w)?)
        }
        Entry::File { source, mode } => {
            let mut f = std::fs::File::open(source)
                .with_context(|| format!("opening {}", source.display()))?;
            let size = f.metadata()?.len();
            write_header(w, ino, path, S_IFREG | mode, 1, size, (0, 0))?;
            let copied = io::copy(&mut f, w)?;
            if copied != size {
                bail!("{} changed size while being archived", source.display());
            }
            Ok(pad4(w)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_parents_first_and_pads_to_four_bytes() {
        let mut t = Tree::default();
        t.add(
            "/etc/shifter-vm/args",
            Entry::Data {
                data: b"abc".to_vec(),
                mode: 0o644,
            },
        )
        .unwrap();
        t.add("/dev/console", Entry::CharDev(5, 1)).unwrap();
        t.add("/bin/sh", Entry::Symlink("busybox".into())).unwrap();
        t.add("/etc", Entry::Dir).unwrap();
        assert!(t.add("/bin/sh", Entry::Symlink("other".into())).is_err());
        assert!(t.add("/bin/sh/x", Entry::Dir).is_err());
        assert!(t.add("/a/../b", Entry::Dir).is_err());
        let out = std::env::temp_dir().join(format!("xtask-cpio-test-{}", std::process::id()));
        let n = t.write(&out).unwrap();
        let data = std::fs::read(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(data.len() % 4, 0);
        let text = String::from_utf8_lossy(&data);
        let names: Vec<_> = [
            "bin\0",
            "bin/sh\0",
            "dev\0",
            "dev/console\0",
            "etc\0",
            "etc/shifter-vm\0",
            "etc/shifter-vm/args\0",
            "TRAILER!!!\0",
        ]
        .iter()
        .map(|n| text.find(n).unwrap_or_else(|| panic!("{n:?} missing")))
        .collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "order: {names:?}");
        // Every header starts with the newc magic at a 4-byte boundary.
        assert!(data.starts_with(b"070701"));
        let console = text.find("dev/console\0").unwrap() - 110;
        assert_eq!(&text[console..console + 6], "070701");
        // rdevmajor 5, rdevminor 1.
        assert_eq!(&text[console + 78..console + 94], "0000000500000001");
    }
}
