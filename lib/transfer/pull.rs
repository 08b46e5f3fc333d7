//! The pull side of a channel: bundles and chunks requested one at a time,
//! written under part names and renamed once checked.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{anyhow, Context};

use super::bundle::rel;
use super::channel::Channel;
use super::checksum::{cksum_file, parse_sums, Cksum};
use super::queue::{Job, Shared};
use super::PART;
use crate::exit;

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

pub(super) fn pull_worker(shared: &Shared, mut ch: Channel) -> Result<(), String> {
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
