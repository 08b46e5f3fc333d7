//! Plain aligned tables for people; scripts use `--json`.

/// Render rows under headers, columns padded to their widest cell. The last
/// column is not padded.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            if i == last {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}"));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A timestamp as people read it (UTC, to the second).
pub fn time(t: &chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn opt_time(t: &Option<chrono::NaiveDateTime>) -> String {
    t.as_ref().map(time).unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns() {
        let t = super::render(
            &["ID", "STATE"],
            &[
                vec!["1".into(), "new".into()],
                vec!["100".into(), "pending".into()],
            ],
        );
        assert_eq!(t, "ID   STATE\n1    new\n100  pending\n");
    }
}
