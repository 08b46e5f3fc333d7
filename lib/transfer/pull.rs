//! The pull side of a channel: bundles and chunks requested one at a time,
//! written under part names and renamed once checked.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::anyhow;

use super::bundle::rel;
use super::channel::Channel;
use super::checksum::{cksum_file, parse_sums, Cksum};
use super::state::{Job, Shared};
use super::{Pair, PART};
use crate::exit;

/// The records of a pulled bundle's tar stream (`tar -b 128`): a 1/128th
/// of the write calls `-b 1` makes.
const PULL_RECORD: u64 = 128 * 512;

/// What became of each file of a bundle, by pair index.
type Outcomes = HashMap<usize, Result<(), String>>;

/// Work one channel until the queue is empty, one job at a time. Err when
/// the channel failed; its job is back in the queue.
pub(super) fn pull_worker(shared: &Shared, mut ch: Channel) -> Result<(), String> {
    while let Some(job) = shared.next() {
        let res = match &job {
            Job::Bundle { id, files } => bundle_job(shared, &mut ch, *id, files),
            Job::Chunk {
                id,
                file,
                offset,
                len,
            } => chunk_job(shared, &mut ch, &job, *id, *file, *offset, *len),
            Job::Finish { id, file } => finish_job(shared, &mut ch, &job, *id, *file),
        };
        if let Err(e) = res {
            shared.requeue(job);
            return Err(channel_failed(ch, &e));
        }
    }
    ch.close();
    Ok(())
}

/// End a channel that failed: what went wrong, with what ssh said.
fn channel_failed(ch: Channel, e: &anyhow::Error) -> String {
    let msg = ch
        .stderr
        .lock()
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    ch.kill();
    if msg.is_empty() {
        exit::one_line(e)
    } else {
        format!("{}: {msg}", exit::one_line(e))
    }
}

/// Pull a bundle; its files that failed go again as a bundle of their own,
/// each with its own reason.
fn bundle_job(shared: &Shared, ch: &mut Channel, id: u64, files: &[usize]) -> anyhow::Result<()> {
    let results = pull_bundle(shared, ch, id, files)?;
    let mut failed = Vec::new();
    let mut reasons = HashMap::new();
    for (f, r) in results {
        match r {
            Ok(()) => {
                let mut g = shared.lock();
                g.files[f].done = true;
                g.files_done += 1;
                let s = g.files[f].size;
                g.bytes_done += s;
            }
            Err(e) => {
                failed.push(f);
                reasons.insert(f, e);
            }
        }
    }
    if failed.is_empty() {
        let mut g = shared.lock();
        g.outstanding -= 1;
        shared.cv.notify_all();
    } else {
        // Retry only what failed, as a bundle of its own id.
        let retry = Job::Bundle { id, files: failed };
        shared.fail_each(retry, &reasons);
    }
    Ok(())
}

/// Pull a chunk of a large file into its part file, at its offset.
fn chunk_job(
    shared: &Shared,
    ch: &mut Channel,
    job: &Job,
    id: u64,
    file: usize,
    offset: u64,
    len: u64,
) -> anyhow::Result<()> {
    let p = &shared.pairs[file];
    ch.send(format!("R {id} {offset} {len} 0\n{}\n", p.src).as_bytes())?;
    ch.flush()?;
    let head = ch.line()?;
    if head.starts_with(&format!("BAD {id} ")) {
        shared.fail(job.clone(), head.splitn(3, ' ').nth(2).unwrap_or("failed"));
        return Ok(());
    }
    if head != format!("D {id} {len}") {
        return Err(anyhow!("unexpected answer {head:?}"));
    }
    let data = ch.exact(len as usize)?;
    let path = part_path(&p.dst);
    match write_at(&path, &data, offset) {
        Ok(()) => shared.succeed(job),
        Err(e) => {
            shared.local_error(&path, &e);
            shared.fail(
                job.clone(),
                &format!("cannot write {}: {e}", path.display()),
            )
        }
    }
    Ok(())
}

/// Write `data` into the file at `path` (made, with its folder, when
/// missing) at `offset`.
fn write_at(path: &Path, data: &[u8], offset: u64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    f.write_all_at(data, offset)?;
    Ok(())
}

/// Finish a chunked pull: the part file's size and checksum against the
/// remote side's, then its final name.
fn finish_job(
    shared: &Shared,
    ch: &mut Channel,
    job: &Job,
    id: u64,
    file: usize,
) -> anyhow::Result<()> {
    let p = &shared.pairs[file];
    ch.send(format!("H {id} 0 0 0\n{}\n", p.src).as_bytes())?;
    ch.flush()?;
    let head = ch.line()?;
    let remote = head
        .strip_prefix(&format!("S {id} "))
        .unwrap_or("")
        .to_string();
    let path = part_path(&p.dst);
    let size = shared.lock().files[file].size;
    let local = cksum_file(&path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()));
    let check = match local {
        Ok(sum)
            if sum == remote && std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) == size =>
        {
            // Durable before it gets its final name.
            if let Ok(f) = File::open(&path) {
                let _ = f.sync_data();
            }
            std::fs::rename(&path, &p.dst).map_err(|e| {
                shared.local_error(Path::new(&p.dst), &e);
                format!("cannot rename into {}: {e}", p.dst)
            })
        }
        Ok(_) => Err("checksum differs from the remote side's".to_string()),
        Err(e) => Err(exit::one_line(&e)),
    };
    match check {
        Ok(()) => shared.succeed(job),
        Err(e) => shared.fail(job.clone(), &e),
    }
    Ok(())
}

/// Receive one pulled bundle: manifest, tar stream, errors. Only the listed
/// files are written; any other entry is refused.
fn pull_bundle(
    shared: &Shared,
    ch: &mut Channel,
    id: u64,
    files: &[usize],
) -> anyhow::Result<Vec<(usize, Result<(), String>)>> {
    let z = ch.zstd && shared.lock().compress_now;
    request_bundle(shared, ch, id, files, z)?;
    let sums = read_manifest(ch, id)?;
    let mut unpack = Unpack::new(shared, files, sums);
    receive_stream(shared, ch, id, &mut unpack)?;
    let got = unpack.move_into_place();
    let errors = read_errors(ch, id)?;
    Ok(outcomes(shared, files, got, &errors))
}

/// Ask for a bundle (`G`): the files' paths, absolute then relative.
fn request_bundle(
    shared: &Shared,
    ch: &mut Channel,
    id: u64,
    files: &[usize],
    z: bool,
) -> anyhow::Result<()> {
    let mut list = Vec::new();
    let mut relative = Vec::new();
    for &f in files {
        list.extend_from_slice(shared.pairs[f].src.as_bytes());
        list.push(0);
        relative.extend_from_slice(rel(&shared.pairs[f].src).as_bytes());
        relative.push(0);
    }
    ch.send(
        format!(
            "G {id} {} {} {} 0\n",
            list.len(),
            relative.len(),
            u8::from(z)
        )
        .as_bytes(),
    )?;
    ch.send(&list)?;
    ch.send(&relative)?;
    ch.flush()?;
    Ok(())
}

/// An answer `KIND id n` + n bytes: the bytes.
fn sized_answer(ch: &mut Channel, kind: char, id: u64) -> anyhow::Result<Vec<u8>> {
    let head = ch.line()?;
    let n: usize = head
        .strip_prefix(&format!("{kind} {id} "))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("unexpected answer {head:?}"))?;
    Ok(ch.exact(n)?)
}

/// The `M` answer: the remote side's checksums of the bundle's files.
fn read_manifest(ch: &mut Channel, id: u64) -> anyhow::Result<HashMap<String, String>> {
    Ok(parse_sums(&String::from_utf8_lossy(&sized_answer(
        ch, 'M', id,
    )?)))
}

/// The `T` (or, compressed, `Z`) answer: the bundle's tar stream, unpacked
/// as it comes.
fn receive_stream(
    shared: &Shared,
    ch: &mut Channel,
    id: u64,
    unpack: &mut Unpack,
) -> anyhow::Result<()> {
    let head = ch.line()?;
    if head == format!("T {id}") {
        // The stream is whole records of PULL_RECORD bytes: the reader stops
        // at the first zero block of the end; read the rest of its record.
        let mut r = Counted {
            inner: &mut ch.stdout,
            n: 0,
        };
        if let Err(e) = unpack.unpack(&mut r) {
            return Err(e.context("the bundle stream is out of step; channel closed"));
        }
        // (The second zero block is still to come: when the first ended a
        // record, it fills the whole next one.)
        let rest = PULL_RECORD - r.n % PULL_RECORD;
        let mut zero = vec![0u8; rest as usize];
        ch.stdout.read_exact(&mut zero)?;
        if zero.iter().any(|b| *b != 0) {
            return Err(anyhow!("the bundle stream is out of step; channel closed"));
        }
    } else if let Some(n) = head
        .strip_prefix(&format!("Z {id} "))
        .and_then(|n| n.parse::<usize>().ok())
    {
        let data = ch.exact(n)?;
        shared.lock().compressed += 1;
        let raw = zstd::stream::decode_all(data.as_slice())?;
        unpack.unpack(&mut raw.as_slice())?;
    } else {
        return Err(anyhow!("unexpected answer {head:?}"));
    }
    Ok(())
}

/// The `X` answer: what tar said on the remote side, on one line.
fn read_errors(ch: &mut Channel, id: u64) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&sized_answer(ch, 'X', id)?)
        .trim()
        .replace('\n', "; "))
}

/// Each file's outcome, in the bundle's order; a file the stream did not
/// bring was not sent (what tar said of that file, when it said anything:
/// never another file's complaint).
fn outcomes(
    shared: &Shared,
    files: &[usize],
    mut got: Outcomes,
    errors: &str,
) -> Vec<(usize, Result<(), String>)> {
    files
        .iter()
        .map(|&f| {
            let r = got.remove(&f).unwrap_or_else(|| {
                let name = rel(&shared.pairs[f].src);
                let said: Vec<&str> = errors
                    .split("; ")
                    .filter(|l| !name.is_empty() && l.contains(name))
                    .take(3)
                    .collect();
                Err(if said.is_empty() {
                    "not sent by the remote side".to_string()
                } else {
                    format!("not sent by the remote side: {}", said.join("; "))
                })
            });
            (f, r)
        })
        .collect()
}

/// A pulled bundle's tar stream as it is read: each listed file written
/// under its part name and checked against the manifest; any other entry
/// refused.
struct Unpack<'a> {
    shared: &'a Shared,
    /// Relative name -> pair index.
    wanted: HashMap<String, usize>,
    /// The remote side's checksums, by path.
    sums: HashMap<String, String>,
    got: Outcomes,
    /// Files checked and waiting for their final names (and their sizes).
    checked: Vec<(usize, u64)>,
    /// Destination folders made (or found) for this bundle: each is made
    /// and looked at once, not once per file.
    folders: HashSet<PathBuf>,
    /// One open folder on each file system they are on, to flush it by.
    on_device: HashMap<u64, File>,
    buf: Vec<u8>,
}

impl<'a> Unpack<'a> {
    fn new(shared: &'a Shared, files: &[usize], sums: HashMap<String, String>) -> Unpack<'a> {
        Unpack {
            shared,
            wanted: files
                .iter()
                .map(|&f| (rel(&shared.pairs[f].src).to_string(), f))
                .collect(),
            sums,
            got: HashMap::new(),
            checked: Vec::new(),
            folders: HashSet::new(),
            on_device: HashMap::new(),
            buf: vec![0u8; 1 << 20],
        }
    }

    /// Read a tar stream through its end. Err on an entry not asked for.
    fn unpack(&mut self, reader: &mut dyn Read) -> anyhow::Result<()> {
        let shared = self.shared;
        let mut ar = tar::Archive::new(reader);
        for entry in ar.entries()? {
            let mut e = entry?;
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let kind = e.header().entry_type();
            let Some(&f) = self.wanted.get(&name) else {
                // Read past it; it is never written.
                std::io::copy(&mut e, &mut std::io::sink())?;
                return Err(anyhow!(
                    "the remote side sent {name:?}, which was not asked for: refused"
                ));
            };
            if !kind.is_file() || name.split('/').any(|c| c == "..") || name.starts_with('/') {
                std::io::copy(&mut e, &mut std::io::sink())?;
                self.got
                    .insert(f, Err(format!("{name:?} is not a regular file: refused")));
                continue;
            }
            let p = &shared.pairs[f];
            let written = self
                .folder_of(&p.dst)
                .and_then(|()| write_part(shared, &mut e, p, &self.sums, &mut self.buf));
            match written {
                Ok(size) => self.checked.push((f, size)),
                Err(e) => {
                    let _ = std::fs::remove_file(part_path(&p.dst));
                    self.got.insert(f, Err(exit::one_line(&e)));
                }
            }
        }
        Ok(())
    }

    /// Make the folder of `dst` the first time this bundle writes there,
    /// and keep one open folder per file system to flush it by.
    fn folder_of(&mut self, dst: &str) -> anyhow::Result<()> {
        let Some(dir) = Path::new(dst).parent() else {
            return Ok(());
        };
        if self.folders.contains(dir) {
            return Ok(());
        }
        if let Err(e) = std::fs::create_dir_all(dir) {
            self.shared.local_error(dir, &e);
            return Err(anyhow!("cannot create folder {}: {e}", dir.display()));
        }
        if let Ok(d) = File::open(dir) {
            use std::os::unix::fs::MetadataExt;
            if let Ok(m) = d.metadata() {
                self.on_device.entry(m.dev()).or_insert(d);
            }
        }
        self.folders.insert(dir.to_path_buf());
        Ok(())
    }

    /// Durable before they get their final names: one flush per file
    /// system for the bundle, rather than one per file. Then the checked
    /// files are renamed into place.
    fn move_into_place(mut self) -> Outcomes {
        for file in self.on_device.values() {
            sync_file_system(file);
        }
        for (f, size) in self.checked {
            let p = &self.shared.pairs[f];
            let res = std::fs::rename(part_path(&p.dst), &p.dst).map_err(|e| {
                self.shared.local_error(Path::new(&p.dst), &e);
                anyhow!("cannot rename into {}: {e}", p.dst)
            });
            if res.is_ok() {
                self.shared.progress.inc(size);
            }
            self.got.insert(f, res.map_err(|e| exit::one_line(&e)));
        }
        self.got
    }
}

/// One file of a pulled bundle into its part file (its folder is there),
/// checksummed on the way: its size when the checksum is the remote side's.
/// A write that fails for this machine's reason stops the transfer.
fn write_part(
    shared: &Shared,
    entry: &mut impl Read,
    p: &Pair,
    sums: &HashMap<String, String>,
    buf: &mut [u8],
) -> anyhow::Result<u64> {
    let part = part_path(&p.dst);
    let here = |e: std::io::Error| {
        shared.local_error(&part, &e);
        anyhow!("cannot write {}: {e}", part.display())
    };
    let mut out = File::create(&part).map_err(here)?;
    let mut h = Cksum::default();
    let mut size = 0u64;
    loop {
        let k = entry.read(buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        out.write_all(&buf[..k]).map_err(here)?;
        size += k as u64;
    }
    let sum = h.finish();
    match sums.get(&p.src) {
        Some(s) if *s == sum => Ok(size),
        Some(_) => Err(anyhow!("checksum differs from the remote side's")),
        None => Err(anyhow!("no checksum came for it")),
    }
}

/// A reader that counts what was read through it.
struct Counted<'a, R: Read> {
    inner: &'a mut R,
    n: u64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// Flush the file system that holds `file` (syncfs(2)); a failure leaves
/// the data to the kernel's own write-back, as any copy without it.
fn sync_file_system(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the duration of the call, and
    // syncfs only reads it.
    unsafe {
        libc::syncfs(file.as_raw_fd());
    }
}

fn part_path(dst: &str) -> PathBuf {
    PathBuf::from(format!("{dst}{PART}"))
}
