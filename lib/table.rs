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

/// Like [`render`], cut to `width` columns when given: the widest
/// column's cells are shortened (ending in `~`) until the table fits or
/// every column is down to its header's width.
pub fn render_fit(headers: &[&str], rows: &[Vec<String>], width: Option<usize>) -> String {
    let Some(width) = width else {
        return render(headers, rows);
    };
    let n = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let floor: Vec<usize> = headers.iter().map(|h| h.chars().count().max(4)).collect();
    let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * n.saturating_sub(1);
    while total(&widths) > width {
        let Some((i, _)) = widths
            .iter()
            .enumerate()
            .filter(|(i, w)| **w > floor[*i])
            .max_by_key(|(_, w)| **w)
        else {
            break;
        };
        widths[i] -= 1;
    }
    let cut: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .zip(&widths)
                .map(|(cell, w)| {
                    if cell.chars().count() > *w {
                        let mut c: String = cell.chars().take(w.saturating_sub(1)).collect();
                        c.push('~');
                        c
                    } else {
                        cell.clone()
                    }
                })
                .collect()
        })
        .collect();
    render(headers, &cut)
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

    #[test]
    fn fits_by_cutting_the_widest_column() {
        let rows = vec![vec![
            "1".to_string(),
            "a very long message about the run".to_string(),
        ]];
        let t = super::render_fit(&["ID", "MESSAGE"], &rows, Some(20));
        assert_eq!(t, "ID  MESSAGE\n1   a very long mes~\n");
        assert!(t.lines().all(|l| l.chars().count() <= 20));
        assert_eq!(
            super::render_fit(&["ID", "MESSAGE"], &rows, None),
            super::render(&["ID", "MESSAGE"], &rows)
        );
    }
}
