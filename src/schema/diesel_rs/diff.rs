//! Unified diffs: applying diesel.toml's `patch_file` to the generated schema (each hunk where
//! its header says, else at the nearest place its old lines match, looking alternately before
//! and after; hunks never overlap what an earlier hunk changed), and showing what
//! `--locked-schema` would change.

use anyhow::bail;

#[derive(Debug, Clone, PartialEq)]
enum Line {
    Context(String),
    Delete(String),
    Insert(String),
}

#[derive(Debug)]
struct Hunk {
    new_start: usize,
    lines: Vec<Line>,
}

/// `@@ -a[,b] +c[,d] @@`: `(b, c, d)` (b and d default to 1).
fn parse_header(line: &str) -> Option<(usize, usize, usize)> {
    let rest = line.strip_prefix("@@ -")?;
    let (ranges, _) = rest.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let count = |range: &str| -> Option<(usize, usize)> {
        match range.split_once(',') {
            Some((start, len)) => Some((start.parse().ok()?, len.parse().ok()?)),
            None => Some((range.parse().ok()?, 1)),
        }
    };
    let (_, old_len) = count(old)?;
    let (new_start, new_len) = count(new)?;
    Some((old_len, new_start, new_len))
}

/// Splits text into lines that keep their `\n`.
fn lines_of(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

fn parse(patch: &str) -> anyhow::Result<Vec<Hunk>> {
    let lines = lines_of(patch);
    let mut hunks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        if !line.starts_with("@@ ") {
            if hunks.is_empty() || line.starts_with("--- ") || line.starts_with("+++ ") {
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            bail!("line {i}: expected a hunk header (`@@ -a,b +c,d @@`), found {line:?}");
        }
        let (mut old_left, new_start, mut new_left) =
            parse_header(line.trim_end()).ok_or_else(|| {
                anyhow::anyhow!("line {i}: malformed hunk header {:?}", line.trim_end())
            })?;
        let mut body: Vec<Line> = Vec::new();
        while old_left > 0 || new_left > 0 {
            let Some(&raw) = lines.get(i) else {
                bail!("line {}: the patch ends inside a hunk", i + 1);
            };
            i += 1;
            let (mark, text) = match raw.chars().next() {
                Some(c @ (' ' | '-' | '+')) => (c, raw[1..].to_string()),
                Some('\n') => (' ', "\n".to_string()),
                Some('\\') => {
                    strip_newline(&mut body);
                    continue;
                }
                _ => bail!("line {i}: unexpected line in a hunk: {:?}", raw.trim_end()),
            };
            match mark {
                ' ' if old_left > 0 && new_left > 0 => {
                    old_left -= 1;
                    new_left -= 1;
                    body.push(Line::Context(text));
                }
                '-' if old_left > 0 => {
                    old_left -= 1;
                    body.push(Line::Delete(text));
                }
                '+' if new_left > 0 => {
                    new_left -= 1;
                    body.push(Line::Insert(text));
                }
                _ => bail!("line {i}: the hunk has more lines than its header says"),
            }
        }
        if lines.get(i).is_some_and(|l| l.starts_with('\\')) {
            strip_newline(&mut body);
            i += 1;
        }
        hunks.push(Hunk {
            new_start,
            lines: body,
        });
    }
    Ok(hunks)
}

/// `\ No newline at end of file`: the line before it has no line break.
fn strip_newline(body: &mut [Line]) {
    if let Some(Line::Context(t) | Line::Delete(t) | Line::Insert(t)) = body.last_mut() {
        if t.ends_with('\n') {
            t.pop();
        }
    }
}

/// Applies a unified diff to `text`. An error names the first hunk that does not apply.
pub(crate) fn apply(text: &str, patch: &str) -> anyhow::Result<String> {
    let hunks = parse(patch)?;
    // Each line of the image, and whether a hunk wrote it.
    let mut image: Vec<(String, bool)> = lines_of(text)
        .into_iter()
        .map(|l| (l.to_string(), false))
        .collect();
    for (n, hunk) in hunks.iter().enumerate() {
        let old: Vec<&str> = hunk
            .lines
            .iter()
            .filter_map(|l| match l {
                Line::Context(t) | Line::Delete(t) => Some(t.as_str()),
                Line::Insert(_) => None,
            })
            .collect();
        let new: Vec<(String, bool)> = hunk
            .lines
            .iter()
            .filter_map(|l| match l {
                Line::Context(t) | Line::Insert(t) => Some((t.clone(), true)),
                Line::Delete(_) => None,
            })
            .collect();
        let fits = |pos: usize| {
            image.get(pos..pos + old.len()).is_some_and(|window| {
                window
                    .iter()
                    .zip(&old)
                    .all(|((line, patched), want)| !patched && line == want)
            })
        };
        let start = hunk.new_start.saturating_sub(1).min(image.len());
        let mut candidates = vec![start];
        let (mut back, mut fwd) = (start, start + 1);
        while back > 0 || fwd < image.len() {
            if back > 0 {
                back -= 1;
                candidates.push(back);
            }
            if fwd < image.len() {
                candidates.push(fwd);
                fwd += 1;
            }
        }
        let Some(pos) = candidates.into_iter().find(|&p| fits(p)) else {
            bail!(
                "hunk #{} (at line {}) does not apply to the generated schema",
                n + 1,
                hunk.new_start
            );
        };
        image.splice(pos..pos + old.len(), new);
    }
    Ok(image.into_iter().map(|(l, _)| l).collect())
}

/// A unified diff from `old` to `new` (three lines of context), empty when they are equal.
pub(crate) fn unified(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    let a = lines_of(old);
    let b = lines_of(new);
    // Longest common subsequence, from the ends.
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    if ops.iter().all(|(op, _)| *op == ' ') {
        return String::new();
    }
    const CONTEXT: usize = 3;
    let mut out = format!("--- {old_label}\n+++ {new_label}\n");
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut k = 0;
    while k < changed.len() {
        let first = changed[k];
        let mut last = first;
        while k + 1 < changed.len() && changed[k + 1] <= last + 2 * CONTEXT + 1 {
            k += 1;
            last = changed[k];
        }
        k += 1;
        let from = first.saturating_sub(CONTEXT);
        let to = (last + CONTEXT + 1).min(ops.len());
        let old_start = ops[..from].iter().filter(|(op, _)| *op != '+').count();
        let new_start = ops[..from].iter().filter(|(op, _)| *op != '-').count();
        let old_len = ops[from..to].iter().filter(|(op, _)| *op != '+').count();
        let new_len = ops[from..to].iter().filter(|(op, _)| *op != '-').count();
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(
                "@@ -{},{old_len} +{},{new_len} @@\n",
                old_start + usize::from(old_len > 0),
                new_start + usize::from(new_len > 0)
            ),
        );
        for (op, line) in &ops[from..to] {
            out.push(*op);
            out.push_str(line);
            if !line.ends_with('\n') {
                out.push_str("\n\\ No newline at end of file\n");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n";
        let new = "a\nb\nC\nd\ne\nf\ng\nh\ni\nj\nk\n";
        let patch = unified(old, new, "old", "new");
        assert!(patch.contains("-c\n+C\n"), "{patch}");
        assert_eq!(apply(old, &patch).unwrap(), new);
        assert_eq!(unified(old, old, "a", "b"), "");
    }

    #[test]
    fn moved_hunk_applies_nearby() {
        let patch = "--- a\n+++ b\n@@ -1,2 +1,2 @@\n x\n-y\n+z\n";
        assert_eq!(apply("q\nx\ny\n", patch).unwrap(), "q\nx\nz\n");
    }

    #[test]
    fn bad_hunk_is_named() {
        let patch = "@@ -1,1 +1,1 @@\n-nope\n+yes\n";
        let err = apply("a\n", patch).unwrap_err().to_string();
        assert!(err.contains("hunk #1"), "{err}");
    }
}
