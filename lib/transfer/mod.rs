//! The transfer engine behind `xfer`: copies element i of a source list to
//! element i of a destination list, to (push) or from (pull) one or more
//! front ends, over a few long-lived channels per master.
//!
//! Each channel runs one small bash agent on the remote side (standard
//! tools only: bash, coreutils, tar, cksum, dd, zstd when present) that
//! reads framed requests on stdin. It answers `READY Z TMP` first: whether
//! it has zstd, and its own temporary folder.
//!
//! | frame | meaning |
//! |---|---|
//! | `P id len z` + payload | push a bundle: a tar (zstd when z=1) of files staged as `DIR/.offload-part.SESSION-ID/NAME` and of the bundle's lists in the agent's `TMP/b.ID/`, then `cksum` of each file against the list and a move per folder |
//! | `C id off len z` + path line + payload | push a chunk of a large file into `DEST.offload-part.SESSION` at `off` |
//! | `F id size sha` + path line | finish a chunked push: check size and checksum, rename |
//! | `G id n m z` + NUL-separated paths, absolute (n bytes) then relative (m bytes) | pull a bundle: `M` manifest (cksum), `T` tar stream (or `Z` zstd), `X` errors |
//! | `R id off len` + path line | pull a chunk: `D id len` + bytes |
//! | `H id` + path line | checksum of one file: `S id sum` |
//! | `Q id n` + NUL-separated paths | stat: `L id n` + `size path` lines for those that exist |
//! | `K id n` + NUL-separated paths | checksums: `L id n` + cksum lines |
//! | `N id` | nothing: `OK id` at once (the round trip is measured with it) |
//!
//! The agent's `$1` is the session: a token of the transfer, so that what a
//! dead transfer left behind (its agents may still be finishing) is never
//! taken for this one's. Answers are lines `OK id`, `BAD id reason`, or the
//! frames above. Files
//! are written under a temporary name and renamed only once their size and
//! checksum are right, on either side, so nothing incomplete looks complete.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use serde::Serialize;

use crate::exit;
use crate::ssh::{self, Host};
use crate::target::bad_path_char;

/// Suffix of files being written.
pub const PART: &str = ".offload-part";
/// Prefix of the hidden staging folder of a pushed bundle.
pub const PART_DIR: &str = ".offload-part.";

/// The remote agent (see the module documentation), run by bash on the
/// far side of each channel.
pub const AGENT: &str = include_str!("agent.sh");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Push,
    Pull,
}

impl Direction {
    /// "push" or "pull", as the JSON and the transfer-rate rows spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Push => "push",
            Direction::Pull => "pull",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compress {
    /// When the data compresses, the remote side has zstd, and the link is
    /// slower than compression.
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Channels per master (sshd's MaxSessions is 10 by default and the
    /// user's own shell uses one): the most opened, or exactly this many
    /// when `auto_channels` is off.
    pub channels: usize,
    /// Open only as many channels per master as its measured round trip
    /// needs to keep `AUTO_RATE` in flight, at least 2 (see `channels_for`).
    pub auto_channels: bool,
    /// Target size of a bundle of small files.
    pub bundle_bytes: u64,
    /// At most this many files in a bundle.
    pub bundle_files: usize,
    /// Files larger than this travel in chunks of this size.
    pub chunk_bytes: u64,
    /// Attempts per bundle or chunk before its files are reported failed.
    pub attempts: u32,
    pub compress: Compress,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            channels: 8,
            auto_channels: true,
            bundle_bytes: 32 << 20,
            bundle_files: 4096,
            chunk_bytes: 32 << 20,
            attempts: 3,
            compress: Compress::Auto,
        }
    }
}

/// One copy to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub src: String,
    pub dst: String,
}

/// What happened, for people and scripts.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub direction: Direction,
    pub complete: bool,
    pub files: usize,
    pub transferred: usize,
    pub skipped: usize,
    pub failed: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub hosts: Vec<String>,
    pub channels: usize,
    pub retries: u64,
    pub refusals: u64,
    pub compressed_frames: u64,
    pub failures: Vec<Failure>,
    /// Hosts whose master went away during the transfer.
    pub hosts_lost: Vec<String>,
    /// The measured round trip to each host, in milliseconds (with
    /// automatic channel counts).
    pub round_trip_ms: std::collections::BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub src: String,
    pub dst: String,
    pub reason: String,
}

/// Read a list file: one path per line.
pub fn read_list(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| exit::usage(format!("cannot read list {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Read a TSV list: the first two columns are source and destination
/// (`inputs.list` for a push, `outputs.list` for a pull).
pub fn read_pairs(path: &Path) -> anyhow::Result<Vec<Pair>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| exit::usage(format!("cannot read list {}: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            let mut f = l.split('\t');
            match (f.next(), f.next()) {
                (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => Ok(Pair {
                    src: a.to_string(),
                    dst: b.to_string(),
                }),
                _ => Err(exit::usage(format!(
                    "{} line {}: expected SOURCE<TAB>DESTINATION",
                    path.display(),
                    i + 1
                ))),
            }
        })
        .collect()
}

/// Pair two lists element by element.
pub fn zip_lists(from: Vec<String>, to: Vec<String>) -> anyhow::Result<Vec<Pair>> {
    if from.len() != to.len() {
        return Err(exit::usage(format!(
            "the lists differ in length: {} sources, {} destinations; element i of one goes to element i of the other",
            from.len(),
            to.len()
        )));
    }
    Ok(from
        .into_iter()
        .zip(to)
        .map(|(src, dst)| Pair { src, dst })
        .collect())
}

fn check_pairs(pairs: &[Pair], dir: Direction) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    for (i, p) in pairs.iter().enumerate() {
        for (what, path) in [("source", &p.src), ("destination", &p.dst)] {
            if let Some(ch) = bad_path_char(path) {
                return Err(exit::usage(format!(
                    "element {}: {what} {path:?} holds {ch}",
                    i + 1
                )));
            }
            if path.trim() != path {
                return Err(exit::usage(format!(
                    "element {}: {what} {path:?} starts or ends with white space",
                    i + 1
                )));
            }
        }
        let remote = if dir == Direction::Push {
            &p.dst
        } else {
            &p.src
        };
        if !remote.starts_with('/') {
            return Err(exit::usage(format!(
                "element {}: remote path {remote:?} must be absolute",
                i + 1
            )));
        }
        if remote.split('/').any(|c| c == "..") {
            return Err(exit::usage(format!(
                "element {}: remote path {remote:?} holds '..'",
                i + 1
            )));
        }
        if !seen.insert(p.dst.as_str()) {
            return Err(exit::usage(format!(
                "element {}: destination {:?} appears twice",
                i + 1,
                p.dst
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Channels

/// One agent on one host.
struct Channel {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
    stderr: Arc<Mutex<String>>,
    zstd: bool,
    /// The agent's temporary folder (absolute).
    tmp: String,
}

enum OpenError {
    Refused(String),
    Gone(String),
    Other(String),
}

impl Channel {
    fn open(host: &Host, session: &str) -> Result<Channel, OpenError> {
        let mut cmd = host.command_with(AGENT, &[session]);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| OpenError::Other(format!("cannot run ssh: {e}")))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    if s.len() < 16_384 {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let stdin = child.stdin.take();
        let mut line = String::new();
        let got = stdout.read_line(&mut line);
        if let Some((z, tmp)) = line
            .trim_end_matches('\n')
            .strip_prefix("READY ")
            .and_then(|r| r.split_once(' '))
            .filter(|_| matches!(got, Ok(n) if n > 0))
        {
            return Ok(Channel {
                zstd: z == "1",
                tmp: tmp.to_string(),
                child,
                stdin,
                stdout,
                stderr,
            });
        }
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(50));
        let msg = stderr
            .lock()
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if ssh::session_refused(&msg) {
            Err(OpenError::Refused(msg))
        } else if ssh::master_gone(&msg) {
            Err(OpenError::Gone(msg))
        } else {
            Err(OpenError::Other(if msg.is_empty() {
                format!("agent did not start: {line:?}")
            } else {
                msg
            }))
        }
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(w) => w.write_all(bytes),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "closed",
            )),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut l = String::new();
        if self.stdout.read_line(&mut l)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "channel closed",
            ));
        }
        Ok(l.trim_end_matches('\n').to_string())
    }

    fn exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.stdout.read_exact(&mut b)?;
        Ok(b)
    }

    fn close(mut self) {
        let _ = self.send(b"E 0\n");
        let _ = self.flush();
        drop(self.stdin.take());
        let _ = self.line();
        let _ = self.child.wait();
    }

    /// The shortest of three empty round trips to the agent.
    fn round_trip(&mut self) -> std::io::Result<Duration> {
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            self.send(b"N 0\n")?;
            self.flush()?;
            let answer = self.line()?;
            if answer.trim_end() != "OK 0" {
                return Err(std::io::Error::other(format!(
                    "unexpected answer {answer:?}"
                )));
            }
            best = best.min(t.elapsed());
        }
        Ok(best)
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A request whose answer is `L id n` + n bytes.
    fn listing(&mut self, kind: char, paths: &[&str]) -> anyhow::Result<String> {
        let mut body = Vec::new();
        for p in paths {
            body.extend_from_slice(p.as_bytes());
            body.push(0);
        }
        self.send(format!("{kind} 0 {}\n", body.len()).as_bytes())?;
        self.send(&body)?;
        self.flush()?;
        let head = self.line()?;
        let n: usize = head
            .strip_prefix("L 0 ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("unexpected answer {head:?}"))?;
        Ok(String::from_utf8_lossy(&self.exact(n)?).into_owned())
    }
}

/// POSIX `cksum`: CRC-32 (polynomial 0x04C11DB7) over the data and then
/// its length, as every remote system's `cksum` prints it ("CRC SIZE").
/// Transfers check each file's size and this checksum at the destination.
pub struct Cksum {
    digest: crc_fast::Digest,
    len: u64,
}

impl Default for Cksum {
    fn default() -> Cksum {
        Cksum {
            digest: crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Cksum),
            len: 0,
        }
    }
}

impl Cksum {
    pub fn update(&mut self, data: &[u8]) {
        self.digest.update(data);
        self.len += data.len() as u64;
    }

    /// "CRC SIZE", as `cksum` prints it.
    pub fn finish(mut self) -> String {
        let mut n = self.len;
        while n > 0 {
            self.digest.update(&[(n & 0xff) as u8]);
            n >>= 8;
        }
        format!("{} {}", self.digest.finalize() as u32, self.len)
    }
}

pub fn cksum_bytes(data: &[u8]) -> String {
    let mut c = Cksum::default();
    c.update(data);
    c.finish()
}

pub fn cksum_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut c = Cksum::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        c.update(&buf[..n]);
    }
    Ok(c.finish())
}

/// `cksum` output ("CRC SIZE NAME" lines): name -> "CRC SIZE".
fn parse_sums(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            let (crc, size, name) = (f.next()?, f.next()?, f.next()?);
            Some((name.to_string(), format!("{crc} {size}")))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Work

#[derive(Debug, Clone)]
enum Job {
    Bundle {
        id: u64,
        files: Vec<usize>,
    },
    Chunk {
        id: u64,
        file: usize,
        offset: u64,
        len: u64,
    },
    Finish {
        id: u64,
        file: usize,
    },
}

impl Job {
    fn id(&self) -> u64 {
        match self {
            Job::Bundle { id, .. } | Job::Chunk { id, .. } | Job::Finish { id, .. } => *id,
        }
    }
    fn files(&self) -> Vec<usize> {
        match self {
            Job::Bundle { files, .. } => files.clone(),
            Job::Chunk { file, .. } | Job::Finish { file, .. } => vec![*file],
        }
    }
}

struct FileState {
    size: u64,
    chunks_left: usize,
    done: bool,
    failed: Option<String>,
}

struct Inner {
    queue: VecDeque<Job>,
    attempts: HashMap<u64, u32>,
    /// Jobs queued or in flight.
    outstanding: usize,
    files: Vec<FileState>,
    next_id: u64,
    bytes_done: u64,
    files_done: usize,
    retries: u64,
    refusals: u64,
    compressed: u64,
    /// Open channels per host index.
    open: Vec<usize>,
    /// Channel cap per host index (lowered on refusals).
    cap: Vec<usize>,
    /// Whether the host's channel count is settled (with `auto_channels`,
    /// once its round trip is measured); other slots wait for it.
    sized: Vec<bool>,
    /// Measured round trip per host index.
    round_trip: Vec<Option<Duration>>,
    alive: Vec<bool>,
    lost: Vec<String>,
    abort: Option<String>,
    /// What the last channel to fail said: the reason given for files left
    /// over when every channel has given up.
    last_error: Option<String>,
    max_open: usize,
    compress_now: bool,
    started: Instant,
}

struct Shared {
    inner: Mutex<Inner>,
    cv: Condvar,
    pairs: Vec<Pair>,
    opts: Options,
    dir: Direction,
    progress: indicatif::ProgressBar,
    /// Compressible sample ratio (compressed / raw), when measured.
    ratio: Option<f64>,
    /// This transfer's token for the remote agents' temporary names.
    session: String,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next job, waiting while others are in flight; None when all is
    /// done or the transfer was aborted.
    fn next(&self) -> Option<Job> {
        let mut g = self.lock();
        loop {
            if g.abort.is_some() || g.outstanding == 0 {
                return None;
            }
            if let Some(j) = g.queue.pop_front() {
                return Some(j);
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn succeed(&self, job: &Job) {
        let mut g = self.lock();
        g.outstanding -= 1;
        match job {
            Job::Bundle { files, .. } => {
                for &f in files {
                    g.files[f].done = true;
                    g.files_done += 1;
                    g.bytes_done += g.files[f].size;
                    self.progress.inc(g.files[f].size);
                }
            }
            Job::Chunk { file, len, .. } => {
                g.bytes_done += len;
                self.progress.inc(*len);
                g.files[*file].chunks_left -= 1;
                if g.files[*file].chunks_left == 0 && g.files[*file].failed.is_none() {
                    let id = g.next_id;
                    g.next_id += 1;
                    g.outstanding += 1;
                    g.queue.push_front(Job::Finish { id, file: *file });
                }
            }
            Job::Finish { file, .. } => {
                g.files[*file].done = true;
                g.files_done += 1;
            }
        }
        self.progress.set_message(format!("{} files", g.files_done));
        self.cv.notify_all();
        drop(g);
        self.consider_compression();
    }

    /// A job failed: again, up to the attempt limit; then its files fail.
    fn fail(&self, job: Job, reason: &str) {
        let mut g = self.lock();
        let n = {
            let a = g.attempts.entry(job.id()).or_insert(0);
            *a += 1;
            *a
        };
        if n < self.opts.attempts && g.abort.is_none() {
            g.retries += 1;
            g.queue.push_back(job);
        } else {
            g.outstanding -= 1;
            for f in job.files() {
                if g.files[f].failed.is_none() && !g.files[f].done {
                    g.files[f].failed = Some(reason.to_string());
                }
            }
        }
        self.cv.notify_all();
    }

    /// Put a job back without counting an attempt (its channel went away).
    fn requeue(&self, job: Job) {
        let mut g = self.lock();
        g.queue.push_front(job);
        self.cv.notify_all();
    }
}

fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// An absolute destination's folder ("/" at the top) and file name.
fn folder_and_name(dst: &str) -> (&str, &str) {
    match dst.rsplit_once('/') {
        Some(("", base)) => ("/", base),
        Some((dir, base)) => (dir, base),
        None => ("/", dst),
    }
}

/// Build a push bundle into `tar_buf` (cleared, its capacity kept). Each
/// file travels as `DIR/.offload-part.SESSION-ID/NAME` and is moved to
/// `DIR/NAME` once the bundle checks out. The bundle carries its own lists
/// for the agent, in its temporary folder `remote_tmp/b.ID/`: `D` (staging
/// and destination folders) before the files, so that a bundle cut short
/// can still be cleared away; `P` (staged paths) and `M` (checksums) after
/// them. Each file is read straight into the bundle and checksummed there.
fn push_bundle(
    shared: &Shared,
    id: u64,
    files: &[usize],
    remote_tmp: &str,
    tar_buf: Vec<u8>,
) -> anyhow::Result<Vec<u8>> {
    // Each file's staged name, and each staging folder with its destination.
    let mut staged = Vec::with_capacity(files.len());
    let mut folders = String::new();
    let mut seen = HashSet::new();
    for &f in files {
        let (dir, base) = folder_and_name(&shared.pairs[f].dst);
        let stage = format!(
            "{}/{PART_DIR}{}-{id}",
            dir.trim_end_matches('/'),
            shared.session
        );
        staged.push(format!("{stage}/{base}"));
        if seen.insert(stage.clone()) {
            folders.push_str(&format!("{stage}\t{dir}\n"));
        }
    }
    let meta = format!("{}/b.{id}", remote_tmp.trim_end_matches('/'));
    let mut tar_buf = tar_buf;
    tar_buf.clear();
    let mut tar = tar::Builder::new(tar_buf);
    let list = |tar: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, rel(&format!("{meta}/{name}")), data)
    };
    list(&mut tar, "D", folders.as_bytes())?;
    let mut manifest = String::new();
    let mut paths = Vec::new();
    for (&f, name) in files.iter().zip(&staged) {
        let p = &shared.pairs[f];
        let cannot = || format!("cannot read {}", p.src);
        let file = File::open(&p.src).with_context(cannot)?;
        let meta = file.metadata().with_context(cannot)?;
        let size = meta.len();
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        if let Ok(t) = meta.modified() {
            let since = t.duration_since(std::time::UNIX_EPOCH);
            h.set_mtime(since.unwrap_or_default().as_secs());
        }
        // The header (and a long name's) from the tar crate; the data read
        // straight into the bundle after it, where it is checksummed.
        tar.append_data(&mut h, rel(name), std::io::empty())
            .with_context(|| format!("cannot pack {}", p.src))?;
        let buf = tar.get_mut();
        let at = buf.len();
        let got = (&file).take(size).read_to_end(buf).with_context(cannot)?;
        if got as u64 != size {
            buf.truncate(at);
            anyhow::bail!(
                "{} changed while being read ({size} bytes expected, {got} read)",
                p.src
            );
        }
        let sum = cksum_bytes(&buf[at..]);
        buf.resize(at + size.div_ceil(512) as usize * 512, 0);
        manifest.push_str(&format!("{sum} {name}\n"));
        paths.extend_from_slice(name.as_bytes());
        paths.push(0);
    }
    list(&mut tar, "P", &paths)?;
    list(&mut tar, "M", manifest.as_bytes())?;
    // Whole tar records: GNU tar on the far side reads the bundle straight
    // from the channel (`-B -b 20`) and stops at the record holding the
    // end-of-archive blocks, with no copy through `head -c`.
    let mut payload = tar.into_inner()?;
    let pad = (TAR_RECORD - payload.len() % TAR_RECORD) % TAR_RECORD;
    payload.resize(payload.len() + pad, 0);
    Ok(payload)
}

/// The records of a pulled bundle's tar stream (`tar -b 128`): a 1/128th
/// of the write calls `-b 1` makes.
const PULL_RECORD: u64 = 128 * 512;

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

/// GNU tar's default record: 20 blocks of 512 bytes.
const TAR_RECORD: usize = 20 * 512;

fn compress(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(zstd::bulk::compress(data, 1)?)
}

/// Decide from a sample whether zstd could pay: its ratio, and the speed
/// of compression on this machine.
fn sample_compression(pairs: &[Pair], dir: Direction) -> Option<(f64, f64)> {
    if dir != Direction::Push {
        return None;
    }
    let mut raw = 0usize;
    let mut packed = 0usize;
    let t = Instant::now();
    let step = (pairs.len() / 16).max(1);
    for p in pairs.iter().step_by(step).take(16) {
        let mut f = File::open(&p.src).ok()?;
        let mut buf = vec![0u8; 256 << 10];
        let n = f.read(&mut buf).ok()?;
        buf.truncate(n);
        raw += n;
        packed += zstd::bulk::compress(&buf, 1).ok()?.len();
    }
    if raw == 0 {
        return None;
    }
    let secs = t.elapsed().as_secs_f64().max(1e-6);
    Some((packed as f64 / raw as f64, raw as f64 / secs / 1e6))
}

fn push_worker(shared: &Shared, ch: Channel) -> Result<(), String> {
    let Channel {
        mut child,
        stdin,
        stdout,
        stderr,
        zstd,
        tmp,
    } = ch;
    let mut stdin = match stdin {
        Some(s) => s,
        None => return Err("channel has no input".into()),
    };
    // Frames in flight on this channel; at most two, so the agent always
    // has the next one while it finishes the last.
    let inflight: Mutex<HashMap<u64, Job>> = Mutex::new(HashMap::new());
    let window: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());
    let closed = std::sync::atomic::AtomicBool::new(false);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let lost_any = std::sync::atomic::AtomicBool::new(false);
    let release = || {
        let (m, cv) = &window;
        *m.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        cv.notify_all();
    };
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut stdout = stdout;
            let mut line = String::new();
            loop {
                line.clear();
                match stdout.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let l = line.trim_end();
                let mut it = l.splitn(3, ' ');
                let kind = it.next().unwrap_or("");
                let id: u64 = it.next().and_then(|i| i.parse().ok()).unwrap_or(0);
                if kind == "BYE" {
                    break;
                }
                let job = inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(job) = job {
                    match kind {
                        "OK" => shared.succeed(&job),
                        "BAD" => shared.fail(job, it.next().unwrap_or("failed")),
                        _ => shared.fail(job, &format!("unexpected answer {l:?}")),
                    }
                    release();
                }
            }
            closed.store(true, std::sync::atomic::Ordering::SeqCst);
            let (_, cv) = &window;
            cv.notify_all();
        });
        // Frames are built (files read, checksummed, packed) on their own
        // thread while the previous one is being sent.
        let (ftx, frx) = std::sync::mpsc::sync_channel::<(Job, Frame)>(1);
        let (rtx, rrx) = std::sync::mpsc::channel::<Vec<u8>>();
        let builder = scope.spawn(|| {
            let ftx = ftx;
            let rrx = rrx;
            let mut bufs = Buffers::default();
            while let Some(job) = shared.next() {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    shared.requeue(job);
                    break;
                }
                bufs.bodies.extend(rrx.try_iter());
                bufs.bodies.truncate(3);
                match build_push_frame(shared, &job, zstd, &tmp, &mut bufs) {
                    Ok(frame) => {
                        if let Err(e) = ftx.send((job, frame)) {
                            shared.requeue(e.0 .0);
                            break;
                        }
                    }
                    Err(e) => {
                        // A local problem (an unreadable source): retrying will not help.
                        shared
                            .lock()
                            .attempts
                            .insert(job.id(), shared.opts.attempts);
                        shared.fail(job, &exit::one_line(&e));
                    }
                }
            }
        });
        let mut dead = false;
        loop {
            // Wait for the next frame, but notice a channel that closed
            // meanwhile (its frames in flight must go back to the queue).
            let (job, frame) = match frx.recv_timeout(Duration::from_millis(200)) {
                Ok(x) => x,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if closed.load(std::sync::atomic::Ordering::SeqCst) {
                        dead = true;
                        break;
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            {
                let (m, cv) = &window;
                let mut n = m.lock().unwrap_or_else(|e| e.into_inner());
                while *n >= 2 && !closed.load(std::sync::atomic::Ordering::SeqCst) {
                    n = cv
                        .wait_timeout(n, Duration::from_millis(200))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                if closed.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(n);
                    shared.requeue(job);
                    dead = true;
                    break;
                }
                *n += 1;
            }
            inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(job.id(), job.clone());
            let sent = stdin
                .write_all(&frame.head)
                .and_then(|_| stdin.write_all(&frame.body))
                .and_then(|_| stdin.flush());
            if sent.is_err() {
                dead = true;
                break;
            }
            if frame.body.capacity() > 0 {
                let _ = rtx.send(frame.body);
            }
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for (job, _) in frx.try_iter() {
            shared.requeue(job);
        }
        drop(frx);
        if dead {
            // Give back what this channel had in flight before waiting for
            // the builder: it may be waiting for exactly those jobs.
            drop(stdin);
            let _ = reader.join();
            let left: Vec<Job> = inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain()
                .map(|(_, j)| j)
                .collect();
            lost_any.store(!left.is_empty(), std::sync::atomic::Ordering::SeqCst);
            for j in left {
                shared.requeue(j);
            }
            let _ = builder.join();
        } else {
            let _ = builder.join();
            let _ = stdin.write_all(b"E 0\n").and_then(|_| stdin.flush());
            drop(stdin);
            let _ = reader.join();
        }
    });
    // What the channel did not answer goes back to the queue.
    let left: Vec<Job> = inflight
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_values()
        .collect();
    let lost = !left.is_empty() || lost_any.load(std::sync::atomic::Ordering::SeqCst);
    for j in left {
        shared.requeue(j);
    }
    let status = child.wait();
    if lost || !matches!(status, Ok(s) if s.success()) {
        let msg = stderr
            .lock()
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Err(if msg.is_empty() {
            "channel closed".to_string()
        } else {
            msg
        })
    } else {
        Ok(())
    }
}

/// A frame to send: its head (request line and lists) and its payload.
struct Frame {
    head: Vec<u8>,
    body: Vec<u8>,
}

/// Buffers a channel's frame builder reuses, so big payloads are not
/// allocated (and faulted in) again for every bundle.
#[derive(Default)]
struct Buffers {
    bodies: Vec<Vec<u8>>,
}

fn build_push_frame(
    shared: &Shared,
    job: &Job,
    remote_zstd: bool,
    remote_tmp: &str,
    bufs: &mut Buffers,
) -> anyhow::Result<Frame> {
    let want_z = remote_zstd && {
        let g = shared.lock();
        g.compress_now
    };
    let body = bufs
        .bodies
        .pop()
        .unwrap_or_else(|| Vec::with_capacity(shared.opts.bundle_bytes as usize + (1 << 20)));
    match job {
        Job::Bundle { id, files } => {
            let mut payload = push_bundle(shared, *id, files, remote_tmp, body)?;
            let mut z = 0;
            if want_z {
                let packed = compress(&payload)?;
                bufs.bodies.push(std::mem::replace(&mut payload, packed));
                z = 1;
                shared.lock().compressed += 1;
            }
            Ok(Frame {
                head: format!("P {id} {} {z}\n", payload.len()).into_bytes(),
                body: payload,
            })
        }
        Job::Chunk {
            id,
            file,
            offset,
            len,
        } => {
            let p = &shared.pairs[*file];
            let f = File::open(&p.src).with_context(|| format!("cannot read {}", p.src))?;
            // Read straight into the buffer's spare room: no zeroing first.
            let mut buf = body;
            buf.clear();
            let got = std::io::Seek::seek(&mut &f, std::io::SeekFrom::Start(*offset))
                .and_then(|_| (&f).take(*len).read_to_end(&mut buf))
                .with_context(|| format!("cannot read {}", p.src))?;
            if got as u64 != *len {
                anyhow::bail!("{} is shorter than when the transfer began", p.src);
            }
            let mut z = 0;
            if want_z {
                let packed = compress(&buf)?;
                bufs.bodies.push(std::mem::replace(&mut buf, packed));
                z = 1;
                shared.lock().compressed += 1;
            }
            let head = format!("C {id} {offset} {} {z}\n{}\n", buf.len(), p.dst).into_bytes();
            Ok(Frame { head, body: buf })
        }
        Job::Finish { id, file } => {
            bufs.bodies.push(body);
            let p = &shared.pairs[*file];
            let sum =
                cksum_file(Path::new(&p.src)).with_context(|| format!("cannot read {}", p.src))?;
            let crc = sum.split(' ').next().unwrap_or("");
            let size = shared.lock().files[*file].size;
            Ok(Frame {
                head: format!("F {id} {size} {crc} 0\n{}\n", p.dst).into_bytes(),
                body: Vec::new(),
            })
        }
    }
}

// ---------------------------------------------------------------------------
// Pull

fn part_path(dst: &str) -> PathBuf {
    PathBuf::from(format!("{dst}{PART}"))
}

fn create_part(dst: &str) -> anyhow::Result<File> {
    let part = part_path(dst);
    if let Some(dir) = part.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    File::create(&part).with_context(|| format!("cannot write {}", part.display()))
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
    let head = ch.line()?;
    let n: usize = head
        .strip_prefix(&format!("M {id} "))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("unexpected answer {head:?}"))?;
    let sums = parse_sums(&String::from_utf8_lossy(&ch.exact(n)?));
    // relative name -> pair index
    let wanted: HashMap<String, usize> = files
        .iter()
        .map(|&f| (rel(&shared.pairs[f].src).to_string(), f))
        .collect();
    let mut got: HashMap<usize, Result<(), String>> = HashMap::new();
    let head = ch.line()?;
    // Files checked and waiting for their final names, and one open file
    // on each file system they are on, to flush it by.
    let mut checked: Vec<(usize, u64)> = Vec::new();
    let mut on_device: HashMap<u64, File> = HashMap::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut unpack = |reader: &mut dyn Read,
                      got: &mut HashMap<usize, Result<(), String>>|
     -> anyhow::Result<()> {
        let mut ar = tar::Archive::new(reader);
        for entry in ar.entries()? {
            let mut e = entry?;
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let kind = e.header().entry_type();
            let Some(&f) = wanted.get(&name) else {
                // Read past it; it is never written.
                std::io::copy(&mut e, &mut std::io::sink())?;
                return Err(anyhow!(
                    "the remote side sent {name:?}, which was not asked for: refused"
                ));
            };
            if !kind.is_file() || name.split('/').any(|c| c == "..") || name.starts_with('/') {
                std::io::copy(&mut e, &mut std::io::sink())?;
                got.insert(f, Err(format!("{name:?} is not a regular file: refused")));
                continue;
            }
            let p = &shared.pairs[f];
            let res = (|| -> anyhow::Result<(u64, File)> {
                let mut out = create_part(&p.dst)?;
                let mut h = Cksum::default();
                let mut size = 0u64;
                loop {
                    let k = e.read(&mut buf)?;
                    if k == 0 {
                        break;
                    }
                    h.update(&buf[..k]);
                    out.write_all(&buf[..k])
                        .with_context(|| format!("cannot write {}{PART}", p.dst))?;
                    size += k as u64;
                }
                let sum = h.finish();
                match sums.get(&p.src) {
                    Some(s) if *s == sum => Ok((size, out)),
                    Some(_) => Err(anyhow!("checksum differs from the remote side's")),
                    None => Err(anyhow!("no checksum came for it")),
                }
            })();
            match res {
                Ok((size, out)) => {
                    use std::os::unix::fs::MetadataExt;
                    if let Ok(m) = out.metadata() {
                        on_device.entry(m.dev()).or_insert(out);
                    }
                    checked.push((f, size));
                }
                Err(e) => {
                    let _ = std::fs::remove_file(part_path(&p.dst));
                    got.insert(f, Err(exit::one_line(&e)));
                }
            }
        }
        Ok(())
    };
    if head == format!("T {id}") {
        // The stream is whole records of PULL_RECORD bytes: the reader stops
        // at the first zero block of the end; read the rest of its record.
        let mut r = Counted {
            inner: &mut ch.stdout,
            n: 0,
        };
        if let Err(e) = unpack(&mut r, &mut got) {
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
        unpack(&mut raw.as_slice(), &mut got)?;
    } else {
        return Err(anyhow!("unexpected answer {head:?}"));
    }
    // Durable before they get their final names: one flush per file system
    // for the bundle, rather than one per file.
    for file in on_device.values() {
        sync_file_system(file);
    }
    for (f, size) in checked {
        let p = &shared.pairs[f];
        let res = std::fs::rename(part_path(&p.dst), &p.dst)
            .with_context(|| format!("cannot rename into {}", p.dst));
        if res.is_ok() {
            shared.progress.inc(size);
        }
        got.insert(f, res.map_err(|e| exit::one_line(&e)));
    }
    let head = ch.line()?;
    let n: usize = head
        .strip_prefix(&format!("X {id} "))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("unexpected answer {head:?}"))?;
    let errors = String::from_utf8_lossy(&ch.exact(n)?)
        .trim()
        .replace('\n', "; ");
    Ok(files
        .iter()
        .map(|&f| {
            let r = got.remove(&f).unwrap_or_else(|| {
                Err(if errors.is_empty() {
                    "not sent by the remote side".to_string()
                } else {
                    format!("not sent by the remote side: {errors}")
                })
            });
            (f, r)
        })
        .collect())
}

fn pull_worker(shared: &Shared, mut ch: Channel) -> Result<(), String> {
    while let Some(job) = shared.next() {
        let res: anyhow::Result<()> = (|| match &job {
            Job::Bundle { id, files } => {
                let results = pull_bundle(shared, &mut ch, *id, files)?;
                let mut failed = Vec::new();
                let mut reasons = Vec::new();
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
                            reasons.push(e);
                        }
                    }
                }
                if failed.is_empty() {
                    let mut g = shared.lock();
                    g.outstanding -= 1;
                    shared.cv.notify_all();
                } else {
                    // Retry only what failed, as a bundle of its own id.
                    let reason = reasons.join("; ");
                    let retry = Job::Bundle {
                        id: *id,
                        files: failed,
                    };
                    shared.fail(retry, &reason);
                }
                Ok(())
            }
            Job::Chunk {
                id,
                file,
                offset,
                len,
            } => {
                let p = &shared.pairs[*file];
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
                let data = ch.exact(*len as usize)?;
                let path = part_path(&p.dst);
                let write = (|| -> anyhow::Result<()> {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    let f = std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&path)?;
                    f.write_all_at(&data, *offset)?;
                    Ok(())
                })();
                match write {
                    Ok(()) => shared.succeed(&job),
                    Err(e) => shared.fail(
                        job.clone(),
                        &format!("cannot write {}: {e}", path.display()),
                    ),
                }
                Ok(())
            }
            Job::Finish { id, file } => {
                let p = &shared.pairs[*file];
                ch.send(format!("H {id} 0 0 0\n{}\n", p.src).as_bytes())?;
                ch.flush()?;
                let head = ch.line()?;
                let remote = head
                    .strip_prefix(&format!("S {id} "))
                    .unwrap_or("")
                    .to_string();
                let path = part_path(&p.dst);
                let size = shared.lock().files[*file].size;
                let local =
                    cksum_file(&path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()));
                let check = match local {
                    Ok(sum)
                        if sum == remote
                            && std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) == size =>
                    {
                        // Durable before it gets its final name.
                        if let Ok(f) = File::open(&path) {
                            let _ = f.sync_data();
                        }
                        std::fs::rename(&path, &p.dst)
                            .map_err(|e| format!("cannot rename into {}: {e}", p.dst))
                    }
                    Ok(_) => Err("checksum differs from the remote side's".to_string()),
                    Err(e) => Err(exit::one_line(&e)),
                };
                match check {
                    Ok(()) => shared.succeed(&job),
                    Err(e) => shared.fail(job.clone(), &e),
                }
                Ok(())
            }
        })();
        if let Err(e) = res {
            shared.requeue(job);
            let msg = ch
                .stderr
                .lock()
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            ch.kill();
            return Err(if msg.is_empty() {
                exit::one_line(&e)
            } else {
                format!("{}: {msg}", exit::one_line(&e))
            });
        }
    }
    ch.close();
    Ok(())
}

// ---------------------------------------------------------------------------
// The transfer

/// Copy `pairs` in `dir` through the masters of `hosts`. Err only when
/// nothing could start (bad lists, a missing source, no live master);
/// otherwise the report says complete or partial.
pub fn transfer(
    hosts: &[Host],
    pairs: Vec<Pair>,
    dir: Direction,
    opts: &Options,
    progress: indicatif::ProgressBar,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    if hosts.is_empty() {
        return Err(exit::usage("no hosts given"));
    }
    check_pairs(&pairs, dir)?;
    // Every master must be alive before anything moves.
    for h in hosts {
        h.check()?;
    }
    // Sizes, and what is already complete at the destination.
    let session = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let (first_host, mut first) = open_preflight_channel(hosts, &session)?;
    let (sizes, skip) = match dir {
        Direction::Push => push_preflight(&mut first, &pairs)?,
        Direction::Pull => pull_preflight(&mut first, &pairs)?,
    };
    let total: u64 = sizes
        .iter()
        .enumerate()
        .filter(|(i, _)| !skip[*i])
        .map(|(_, s)| *s)
        .sum();
    progress.set_length(total);
    let ratio = match opts.compress {
        Compress::Never => None,
        _ => sample_compression(&pairs, dir).map(|(r, _)| r),
    };
    let compress_now = opts.compress == Compress::Always;
    // Plan the jobs.
    let mut queue = VecDeque::new();
    let mut next_id = 1u64;
    let mut files: Vec<FileState> = sizes
        .iter()
        .map(|&size| FileState {
            size,
            chunks_left: 0,
            done: false,
            failed: None,
        })
        .collect();
    let mut bundle: Vec<usize> = Vec::new();
    let mut bundle_bytes = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        if skip[i] {
            files[i].done = true;
            continue;
        }
        if size > opts.chunk_bytes {
            let n = size.div_ceil(opts.chunk_bytes);
            files[i].chunks_left = n as usize;
            for k in 0..n {
                let offset = k * opts.chunk_bytes;
                queue.push_back(Job::Chunk {
                    id: next_id,
                    file: i,
                    offset,
                    len: opts.chunk_bytes.min(size - offset),
                });
                next_id += 1;
            }
            continue;
        }
        bundle.push(i);
        bundle_bytes += size + 512;
        if bundle_bytes >= opts.bundle_bytes || bundle.len() >= opts.bundle_files {
            queue.push_back(Job::Bundle {
                id: next_id,
                files: std::mem::take(&mut bundle),
            });
            next_id += 1;
            bundle_bytes = 0;
        }
    }
    if !bundle.is_empty() {
        queue.push_back(Job::Bundle {
            id: next_id,
            files: bundle,
        });
        next_id += 1;
    }
    let skipped = skip.iter().filter(|s| **s).count();
    let outstanding = queue.len();
    let shared = Shared {
        inner: Mutex::new(Inner {
            queue,
            attempts: HashMap::new(),
            outstanding,
            files,
            next_id,
            bytes_done: 0,
            files_done: 0,
            retries: 0,
            refusals: 0,
            compressed: 0,
            open: vec![0; hosts.len()],
            cap: vec![opts.channels.max(1); hosts.len()],
            sized: vec![!opts.auto_channels; hosts.len()],
            round_trip: vec![None; hosts.len()],
            alive: vec![true; hosts.len()],
            lost: Vec::new(),
            abort: None,
            last_error: None,
            max_open: 0,
            compress_now,
            started,
        }),
        cv: Condvar::new(),
        pairs,
        opts: opts.clone(),
        dir,
        progress,
        ratio,
        session,
    };
    if outstanding > 0 {
        // The preflight channel goes on as the first of its host's.
        run_channels(&shared, hosts, first_host, first);
    } else {
        first.close();
    }
    shared.progress.finish_and_clear();
    let g = shared.lock();
    let failures: Vec<Failure> = g
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.done)
        .map(|(i, f)| Failure {
            src: shared.pairs[i].src.clone(),
            dst: shared.pairs[i].dst.clone(),
            reason: f
                .failed
                .clone()
                .or_else(|| g.abort.clone())
                .or_else(|| {
                    g.last_error
                        .as_ref()
                        .map(|m| format!("not transferred: the channels kept failing ({m})"))
                })
                .unwrap_or_else(|| "not transferred".to_string()),
        })
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    let bytes = g.bytes_done;
    Ok(Report {
        direction: dir,
        complete: failures.is_empty(),
        files: shared.pairs.len(),
        transferred: g.files_done,
        skipped,
        failed: failures.len(),
        bytes,
        seconds,
        mb_per_s: bytes as f64 / 1e6 / seconds.max(1e-9),
        hosts: hosts.iter().map(|h| h.alias.clone()).collect(),
        channels: g.max_open,
        retries: g.retries,
        refusals: g.refusals,
        compressed_frames: g.compressed,
        failures,
        hosts_lost: g.lost.clone(),
        round_trip_ms: hosts
            .iter()
            .zip(&g.round_trip)
            .filter_map(|(h, rt)| Some((h.alias.clone(), rt.as_ref()?.as_secs_f64() * 1e3)))
            .collect(),
    })
}

/// Sizes of the remote files that exist, by path.
fn remote_sizes<'a>(
    ch: &mut Channel,
    paths: impl Iterator<Item = &'a str>,
) -> anyhow::Result<HashMap<String, u64>> {
    let paths: Vec<&str> = paths.collect();
    let mut out = HashMap::new();
    for chunk in paths.chunks(20_000) {
        for l in ch.listing('Q', chunk)?.lines() {
            if let Some((s, p)) = l.split_once(' ') {
                if let Ok(s) = s.parse() {
                    out.insert(p.to_string(), s);
                }
            }
        }
    }
    Ok(out)
}

/// Of the candidates (same size on both sides), those whose checksums also
/// agree: complete already, to be skipped.
fn already_complete(
    ch: &mut Channel,
    pairs: &[Pair],
    candidates: &[usize],
    dir: Direction,
) -> anyhow::Result<Vec<bool>> {
    let mut skip = vec![false; pairs.len()];
    for chunk in candidates.chunks(20_000) {
        let paths: Vec<&str> = chunk.iter().map(|&i| ends(&pairs[i], dir).0).collect();
        let sums = parse_sums(&ch.listing('K', &paths)?);
        for &i in chunk {
            let (remote, local) = ends(&pairs[i], dir);
            if let Some(sum) = sums.get(remote) {
                if cksum_file(Path::new(local)).ok().as_ref() == Some(sum) {
                    skip[i] = true;
                }
            }
        }
    }
    Ok(skip)
}

/// (remote path, local path) of a pair.
fn ends(p: &Pair, dir: Direction) -> (&str, &str) {
    match dir {
        Direction::Push => (&p.dst, &p.src),
        Direction::Pull => (&p.src, &p.dst),
    }
}

/// A channel for the preflight listings: any host will do; a host whose
/// sessions are all taken (MaxSessions) is waited for, not failed.
fn open_preflight_channel(hosts: &[Host], session: &str) -> anyhow::Result<(usize, Channel)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut wait = Duration::from_millis(100);
    loop {
        let mut last = String::new();
        for (hi, h) in hosts.iter().enumerate() {
            match Channel::open(h, session) {
                Ok(ch) => return Ok((hi, ch)),
                Err(OpenError::Refused(m)) => last = format!("{}: {m}", h.alias),
                Err(OpenError::Gone(m)) | Err(OpenError::Other(m)) => {
                    return Err(exit::auth(format!(
                        "cannot open a channel to {}: {m}",
                        h.alias
                    )))
                }
            }
        }
        if Instant::now() > deadline {
            return Err(exit::try_later(format!(
                "every host refused a session for 2 minutes (MaxSessions reached): {last}"
            )));
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

fn push_preflight(ch: &mut Channel, pairs: &[Pair]) -> anyhow::Result<(Vec<u64>, Vec<bool>)> {
    let mut sizes = Vec::with_capacity(pairs.len());
    for (i, p) in pairs.iter().enumerate() {
        let m = std::fs::metadata(&p.src).map_err(|e| {
            exit::usage(format!(
                "source {} (element {}) cannot be read: {e}; nothing was sent",
                p.src,
                i + 1
            ))
        })?;
        if !m.is_file() {
            return Err(exit::usage(format!(
                "source {} (element {}) is not a regular file",
                p.src,
                i + 1
            )));
        }
        sizes.push(m.len());
    }
    // Only files whose folder exists there can be complete: ask for the
    // folders first (a first push into new folders then stats no file).
    fn folder(p: &Pair) -> &str {
        folder_and_name(&p.dst).0
    }
    let folders: HashSet<&str> = pairs.iter().map(folder).collect();
    let present = remote_sizes(ch, folders.into_iter())?;
    let remote = remote_sizes(
        ch,
        pairs
            .iter()
            .filter(|p| present.contains_key(folder(p)))
            .map(|p| p.dst.as_str()),
    )?;
    let candidates: Vec<usize> = (0..pairs.len())
        .filter(|&i| remote.get(&pairs[i].dst) == Some(&sizes[i]))
        .collect();
    let skip = already_complete(ch, pairs, &candidates, Direction::Push)?;
    Ok((sizes, skip))
}

fn pull_preflight(ch: &mut Channel, pairs: &[Pair]) -> anyhow::Result<(Vec<u64>, Vec<bool>)> {
    let remote = remote_sizes(ch, pairs.iter().map(|p| p.src.as_str()))?;
    let mut sizes = Vec::with_capacity(pairs.len());
    for (i, p) in pairs.iter().enumerate() {
        match remote.get(&p.src) {
            Some(s) => sizes.push(*s),
            None => {
                return Err(exit::usage(format!(
                    "source {} (element {}) does not exist on the remote side; nothing was fetched",
                    p.src,
                    i + 1
                )))
            }
        }
    }
    let candidates: Vec<usize> = (0..pairs.len())
        .filter(|&i| {
            std::fs::metadata(&pairs[i].dst)
                .map(|m| m.is_file() && m.len() == sizes[i])
                .unwrap_or(false)
        })
        .collect();
    let skip = already_complete(ch, pairs, &candidates, Direction::Pull)?;
    Ok((sizes, skip))
}

/// With automatic channel counts: enough channels to keep this many bytes
/// per second in flight, at OpenSSH's window of about 2 MiB per channel
/// per round trip (a 10 Gbit/s link).
pub const AUTO_RATE: f64 = 1e9;
/// OpenSSH's channel window.
const WINDOW: f64 = 2.0 * 1024.0 * 1024.0;

/// Channels for a host at this round trip: enough to keep `AUTO_RATE` in
/// flight, at least 2 (one bundle is checked while the next arrives), at
/// most `cap`. On a fast local link that is 2; from about 15 ms, 8.
pub fn channels_for(round_trip: Duration, cap: usize) -> usize {
    let need = (round_trip.as_secs_f64() * AUTO_RATE / WINDOW).ceil() as usize;
    need.max(2).min(cap.max(1))
}

/// Keep up to `channels` channels per live host busy until the work is
/// done: refused sessions lower that host's cap; a lost master takes the
/// host out; when no host is left, the transfer stops. `first` (already
/// open, on host `first_host`) is used as that host's first channel.
fn run_channels(shared: &Shared, hosts: &[Host], first_host: usize, first: Channel) {
    let mut first = Some(first);
    std::thread::scope(|scope| {
        for (hi, host) in hosts.iter().enumerate() {
            for slot in 0..shared.opts.channels.max(1) {
                let initial = if hi == first_host && slot == 0 {
                    first.take()
                } else {
                    None
                };
                scope.spawn(move || channel_slot(shared, hosts, hi, host, slot, initial));
                // Stagger channel set-up a little.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
}

/// Slot `slot` of host `hi`: open a channel (or use `initial`) and work it
/// until the queue is empty, opening again after a failure. With automatic
/// channel counts, the first slot to get a channel measures the round trip
/// and sets the host's cap; the others wait for that before opening.
fn channel_slot(
    shared: &Shared,
    hosts: &[Host],
    hi: usize,
    host: &Host,
    slot: usize,
    initial: Option<Channel>,
) {
    let mut initial = initial;
    let mut failures = 0u32;
    // However this slot ends, a host must not stay unsized: the slots
    // waiting on it would wait for ever.
    struct Settle<'a>(&'a Shared, usize);
    impl Drop for Settle<'_> {
        fn drop(&mut self) {
            let mut g = self.0.lock();
            if !g.sized[self.1] {
                g.sized[self.1] = true;
                self.0.cv.notify_all();
            }
        }
    }
    let _settle = (slot == 0).then(|| Settle(shared, hi));
    loop {
        {
            let mut g = shared.lock();
            while slot > 0 && !g.sized[hi] && g.abort.is_none() && g.outstanding > 0 && g.alive[hi]
            {
                g = shared
                    .cv
                    .wait_timeout(g, Duration::from_millis(200))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if g.abort.is_some() || g.outstanding == 0 || !g.alive[hi] || slot >= g.cap[hi] {
                return;
            }
        }
        let opened = match initial.take() {
            Some(ch) => Ok(ch),
            None => Channel::open(host, &shared.session),
        };
        match opened {
            Ok(mut ch) => {
                if slot == 0 && !shared.lock().sized[hi] {
                    let rt = ch.round_trip();
                    let mut g = shared.lock();
                    if let Ok(rt) = rt {
                        g.round_trip[hi] = Some(rt);
                        g.cap[hi] = channels_for(rt, g.cap[hi]);
                    }
                    g.sized[hi] = true;
                    shared.cv.notify_all();
                }
                {
                    let mut g = shared.lock();
                    g.open[hi] += 1;
                    let total: usize = g.open.iter().sum();
                    g.max_open = g.max_open.max(total);
                }
                let r = match shared.dir {
                    Direction::Push => push_worker(shared, ch),
                    Direction::Pull => pull_worker(shared, ch),
                };
                shared.lock().open[hi] -= 1;
                match r {
                    Ok(()) => return,
                    Err(msg) => {
                        if host.check().is_err() {
                            lose_host(shared, hosts, hi, &msg);
                            return;
                        }
                        shared.lock().last_error = Some(msg);
                        failures += 1;
                        if failures > shared.opts.attempts + 2 {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(200 * failures as u64));
                    }
                }
            }
            Err(OpenError::Refused(_)) => {
                // MaxSessions: carry on with fewer channels on this host.
                let mut g = shared.lock();
                g.refusals += 1;
                if g.cap[hi] > 1 {
                    g.cap[hi] -= 1;
                }
                drop(g);
                std::thread::sleep(Duration::from_millis(100 + 50 * slot as u64));
            }
            Err(OpenError::Gone(msg)) => {
                lose_host(shared, hosts, hi, &msg);
                return;
            }
            Err(OpenError::Other(msg)) => {
                if host.check().is_err() {
                    lose_host(shared, hosts, hi, &msg);
                    return;
                }
                shared.lock().last_error = Some(msg);
                failures += 1;
                if failures > shared.opts.attempts + 2 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200 * failures as u64));
            }
        }
    }
}

fn lose_host(shared: &Shared, hosts: &[Host], hi: usize, msg: &str) {
    let mut g = shared.lock();
    if g.alive[hi] {
        g.alive[hi] = false;
        g.lost.push(hosts[hi].alias.clone());
    }
    if g.alive.iter().all(|a| !a) && g.abort.is_none() {
        g.abort = Some(format!(
            "the master connection to {} went away during the transfer ({}); open it again, then rerun: what is complete is skipped",
            hosts[hi].alias,
            msg.lines().next().unwrap_or("")
        ));
    }
    shared.cv.notify_all();
}

/// Switch compression on once the measured rate shows it pays.
pub fn compression_pays(ratio: f64, compress_mb_s: f64, link_mb_s: f64) -> bool {
    ratio < 0.9 && compress_mb_s > link_mb_s * 1.2
}

impl Shared {
    fn consider_compression(&self) {
        let Some(ratio) = self.ratio else { return };
        let mut g = self.lock();
        if g.compress_now || self.opts.compress != Compress::Auto || g.bytes_done < (64 << 20) {
            return;
        }
        let rate = g.bytes_done as f64 / 1e6 / g.started.elapsed().as_secs_f64().max(1e-6);
        // zstd level 1 runs at a few hundred MB/s per core.
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        if compression_pays(ratio, 300.0 * cores, rate) {
            g.compress_now = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_must_match() {
        let e = zip_lists(vec!["a".into()], vec![]).unwrap_err();
        assert!(exit::one_line(&e).contains("1 sources, 0 destinations"));
        let ok = zip_lists(vec!["/l/a".into()], vec!["/r/a".into()]).unwrap();
        assert!(check_pairs(&ok, Direction::Push).is_ok());
        let bad = vec![Pair {
            src: "/l/a".into(),
            dst: "r/a".into(),
        }];
        assert!(
            exit::one_line(&check_pairs(&bad, Direction::Push).unwrap_err()).contains("absolute")
        );
        let bad = vec![Pair {
            src: "/l/a".into(),
            dst: "/r/../a".into(),
        }];
        assert!(exit::one_line(&check_pairs(&bad, Direction::Push).unwrap_err()).contains("'..'"));
        let bad = vec![Pair {
            src: "/l/a\nb".into(),
            dst: "/r/a".into(),
        }];
        assert!(
            exit::one_line(&check_pairs(&bad, Direction::Push).unwrap_err()).contains("newline")
        );
    }

    #[test]
    fn sums_parse() {
        let m = parse_sums("12738659 1 /x/a\\b `c`.dat\n3537609151 1 /x/sp ace\n");
        assert_eq!(m["/x/a\\b `c`.dat"], "12738659 1");
        assert_eq!(m["/x/sp ace"], "3537609151 1");
    }

    #[test]
    fn cksum_is_posix_cksum() {
        // Values printed by coreutils' cksum.
        assert_eq!(cksum_bytes(b"x"), "12738659 1");
        assert_eq!(cksum_bytes(b"y"), "3537609151 1");
        assert_eq!(cksum_bytes(b""), "4294967295 0");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let out = std::process::Command::new("cksum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&data)?;
                c.wait_with_output()
            })
            .unwrap();
        assert_eq!(
            cksum_bytes(&data),
            String::from_utf8(out.stdout).unwrap().trim()
        );
    }

    #[test]
    fn channels_follow_the_round_trip() {
        let ms = Duration::from_millis;
        // Loopback or a LAN: two, so one bundle is checked while the next
        // arrives.
        assert_eq!(channels_for(Duration::from_micros(150), 8), 2);
        assert_eq!(channels_for(ms(3), 8), 2);
        // 1 GB/s in flight at 2 MiB per channel per round trip.
        assert_eq!(channels_for(ms(5), 8), 3);
        assert_eq!(channels_for(ms(10), 8), 5);
        // Never past the cap, whatever the distance.
        assert_eq!(channels_for(ms(40), 8), 8);
        assert_eq!(channels_for(ms(40), 1), 1);
    }

    #[test]
    fn compression_only_pays_when_it_pays() {
        assert!(compression_pays(0.5, 600.0, 50.0));
        assert!(!compression_pays(0.99, 600.0, 50.0));
        assert!(!compression_pays(0.5, 600.0, 1000.0));
    }
}
