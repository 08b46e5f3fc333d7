//! `remotetool import`: ready work items from JSON Lines (a file, or
//! stdin), all or nothing.

use std::io::BufReader;

use serde::Serialize;

use super::args::ImportArgs;
use crate::cli::Session;
use crate::exit::{self, ExitStatus};
use crate::workitems;

#[derive(Serialize)]
struct ImportSummary {
    imported: usize,
    source: String,
}

pub fn run(s: &mut Session, a: ImportArgs) -> anyhow::Result<ExitStatus> {
    let Session {
        db, printer, actor, ..
    } = s;
    let stdin = a.file.as_os_str() == "-";
    let source = if stdin {
        "stdin".to_string()
    } else {
        a.file.display().to_string()
    };
    let items = if stdin {
        workitems::parse(std::io::stdin().lock(), &source)?
    } else {
        let f = std::fs::File::open(&a.file)
            .map_err(|e| exit::usage(format!("cannot open work-item file {source}: {e}")))?;
        workitems::parse(BufReader::new(f), &source)?
    };
    if items.is_empty() {
        return Err(exit::nothing_to_do(format!("{source} holds no work items")));
    }
    let n = workitems::import(db, &items, &source, actor)?;
    printer.info(format!("imported {n} work items from {source}"));
    if printer.is_json() {
        printer.json(&ImportSummary {
            imported: n,
            source,
        })?;
    }
    Ok(ExitStatus::Success)
}
