//! A streaming RFC 4180 reader that keeps what the `csv` crate throws away: whether a field was
//! quoted. `a,,b` has a NULL in the middle, `a,"",b` an empty string, and seeding must tell them
//! apart.
//!
//! It drives `csv_core` (the state machine under the `csv` crate) field by field over a buffered
//! reader. Each call reports how many input bytes it consumed, so the first byte of each field is
//! known: a field is quoted exactly when that byte is `"`. One record is held at a time, in buffers
//! that are reused, so memory does not grow with the file. It also counts lines (a quoted field may
//! span several) so errors can name the line a record starts on.

use std::io::{self, BufRead};

use csv_core::ReadFieldResult;

/// One record: the unescaped bytes of its fields, back to back, with their ends and quoting.
#[derive(Debug, Default)]
pub(crate) struct Record {
    data: Vec<u8>,
    ends: Vec<usize>,
    quoted: Vec<bool>,
    /// The 1-based line of the file the record starts on.
    pub(crate) line: u64,
}

impl Record {
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The raw bytes of field `i` (empty for NULL and for `""` alike).
    pub(crate) fn bytes(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    /// Field `i` as text, or `None` for an unquoted empty field (SQL NULL).
    pub(crate) fn get(&self, i: usize) -> Option<&str> {
        if self.is_null(i) {
            return None;
        }
        // `validate_utf8` ran when the record was read, so this never fails.
        std::str::from_utf8(self.bytes(i)).ok()
    }

    pub(crate) fn is_null(&self, i: usize) -> bool {
        !self.quoted[i] && self.bytes(i).is_empty()
    }

    /// The index of the first field that is not valid UTF-8, if any.
    fn invalid_utf8_field(&self) -> Option<usize> {
        let used = self.ends.last().copied().unwrap_or(0);
        if std::str::from_utf8(&self.data[..used]).is_ok() {
            return None;
        }
        (0..self.len()).find(|&i| std::str::from_utf8(self.bytes(i)).is_err())
    }
}

/// Why a record could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    /// Field `field` (0-based) of the record starting on `line` is not UTF-8.
    NotUtf8 {
        line: u64,
        field: usize,
    },
    /// A quoted field that starts on `line` is still open at the end of the file: csv_core would
    /// take everything after the quote as one field and load it silently.
    UnclosedQuote {
        line: u64,
    },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "cannot read: {e}"),
            ReadError::NotUtf8 { line, field } => write!(
                f,
                "line {line}, field {}: not valid UTF-8 (save the file as UTF-8)",
                field + 1
            ),
            ReadError::UnclosedQuote { line } => write!(
                f,
                "line {line}: a quoted field is never closed (a `\"` is missing)"
            ),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

pub(crate) struct CsvReader<R> {
    input: R,
    core: csv_core::Reader,
    /// Lines seen so far (1-based number of the line being read).
    line: u64,
    /// Input bytes consumed so far.
    bytes: u64,
    /// Whether the start of the input was checked for a byte order mark.
    started: bool,
}

impl<R: BufRead> CsvReader<R> {
    pub(crate) fn new(input: R) -> Self {
        CsvReader {
            input,
            core: csv_core::Reader::new(),
            line: 1,
            bytes: 0,
            started: false,
        }
    }

    /// Input bytes consumed so far (for progress by bytes).
    pub(crate) fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// Reads the next record into `rec`; `Ok(false)` at the end of the input. Blank lines are
    /// skipped, as RFC 4180 readers do.
    pub(crate) fn read(&mut self, rec: &mut Record) -> Result<bool, ReadError> {
        if !self.started {
            self.started = true;
            // Excel writes a UTF-8 byte order mark; it is not part of the first column's name.
            // (csv_core drops one too, but not when its first input is the mark alone.)
            if self.input.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
                self.input.consume(3);
                self.bytes += 3;
            }
        }
        rec.ends.clear();
        rec.quoted.clear();
        if rec.data.len() < 256 {
            rec.data.resize(256, 0);
        }
        let mut out_len = 0;
        // Whether the current field's first byte has been seen, and whether it was a quote.
        let mut field_started = false;
        let mut field_quoted = false;
        let mut record_started = false;
        // The quoting of the current quoted field, followed byte by byte as csv_core does: inside
        // the quotes, `"` closes them unless the next byte is `"` again (an escaped quote); any
        // other byte after the closing quote ends the quoted part for good.
        let mut quote = QuoteState::Done;
        let mut field_line = self.line;
        loop {
            let input = self.input.fill_buf()?;
            let at_eof = input.is_empty();
            let (result, nin, nout) = self.core.read_field(input, &mut rec.data[out_len..]);
            for &b in &input[..nin] {
                // Line ends left over from the previous record (and blank lines) come before the
                // record's first field: they are not part of it.
                if !field_started && !(!record_started && (b == b'\r' || b == b'\n')) {
                    field_started = true;
                    field_quoted = b == b'"';
                    field_line = self.line;
                    quote = if field_quoted {
                        QuoteState::Open
                    } else {
                        QuoteState::Done
                    };
                    if !record_started {
                        record_started = true;
                        rec.line = self.line;
                    }
                } else {
                    quote = match (quote, b == b'"') {
                        (QuoteState::Open, true) => QuoteState::JustClosed,
                        (QuoteState::Open, false) => QuoteState::Open,
                        (QuoteState::JustClosed, true) => QuoteState::Open,
                        _ => QuoteState::Done,
                    };
                }
                if b == b'\n' {
                    self.line += 1;
                }
            }
            self.input.consume(nin);
            self.bytes += nin as u64;
            out_len += nout;
            match result {
                ReadFieldResult::InputEmpty => {}
                ReadFieldResult::OutputFull => {
                    let grown = rec.data.len() * 2;
                    rec.data.resize(grown, 0);
                }
                ReadFieldResult::Field { record_end } => {
                    if !record_started {
                        record_started = true;
                        rec.line = self.line;
                    }
                    if at_eof && field_started && quote == QuoteState::Open {
                        return Err(ReadError::UnclosedQuote { line: field_line });
                    }
                    rec.ends.push(out_len);
                    rec.quoted.push(field_started && field_quoted);
                    field_started = false;
                    quote = QuoteState::Done;
                    if record_end {
                        if let Some(field) = rec.invalid_utf8_field() {
                            return Err(ReadError::NotUtf8 {
                                line: rec.line,
                                field,
                            });
                        }
                        return Ok(true);
                    }
                }
                ReadFieldResult::End => return Ok(false),
            }
        }
    }
}

/// Where the reader is in a quoted field (see `CsvReader::read`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    /// Not in a quoted field, or past its quoted part.
    Done,
    /// Inside the quotes.
    Open,
    /// Just read a `"` inside the quotes: it closes them, or escapes a second `"`.
    JustClosed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &[u8]) -> Vec<(u64, Vec<Option<String>>)> {
        let mut reader = CsvReader::new(io::BufReader::with_capacity(3, text));
        let mut rec = Record::default();
        let mut out = Vec::new();
        while reader.read(&mut rec).unwrap() {
            let fields = (0..rec.len())
                .map(|i| rec.get(i).map(str::to_string))
                .collect();
            out.push((rec.line, fields));
        }
        out
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn empty_unquoted_is_null_and_quoted_empty_is_empty() {
        let rows = all(b"a,b,c\n,\"\",x\n\"\",,\n");
        assert_eq!(rows[1].1, vec![None, s(""), s("x")]);
        assert_eq!(rows[2].1, vec![s(""), None, None]);
    }

    #[test]
    fn quotes_commas_newlines_and_unicode() {
        let rows = all(
            "h1,h2\r\n\"a, b\",\"say \"\"hi\"\"\"\r\n\"two\nlines\",héllo ✓\r\nlast,\"\"\r\n"
                .as_bytes(),
        );
        assert_eq!(rows[1], (2, vec![s("a, b"), s("say \"hi\"")]));
        assert_eq!(rows[2], (3, vec![s("two\nlines"), s("héllo ✓")]));
        assert_eq!(rows[3], (5, vec![s("last"), s("")]));
    }

    #[test]
    fn blank_lines_are_skipped_and_lines_counted() {
        let rows = all(b"a\n\n1\n\n\n2");
        assert_eq!(
            rows,
            vec![(1, vec![s("a")]), (3, vec![s("1")]), (6, vec![s("2")])]
        );
    }

    #[test]
    fn byte_order_mark_is_dropped() {
        let rows = all(b"\xEF\xBB\xBFid,name\n1,\"x\"\n");
        assert_eq!(rows[0].1, vec![s("id"), s("name")]);
    }

    #[test]
    fn a_quoted_first_field_after_crlf_is_seen_as_quoted() {
        let rows = all(b"a,b\r\n\"\",1\r\n,2\r\n");
        assert_eq!(rows[1].1, vec![s(""), s("1")]);
        assert_eq!(rows[2].1, vec![None, s("2")]);
    }

    #[test]
    fn invalid_utf8_names_line_and_field() {
        let mut reader = CsvReader::new(io::BufReader::new(&b"a,b\n1,\xff\n"[..]));
        let mut rec = Record::default();
        assert!(reader.read(&mut rec).unwrap());
        match reader.read(&mut rec) {
            Err(ReadError::NotUtf8 { line: 2, field: 1 }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_fields_grow_the_buffer() {
        let long = "x".repeat(10_000);
        let rows = all(format!("a\n\"{long}\"\n").as_bytes());
        assert_eq!(rows[1].1, vec![Some(long)]);
    }
}

#[cfg(test)]
mod quoting_tests {
    use super::*;

    fn read_all(text: &[u8]) -> Result<Vec<Vec<Option<String>>>, String> {
        let mut reader = CsvReader::new(io::BufReader::with_capacity(2, text));
        let mut rec = Record::default();
        let mut out = Vec::new();
        loop {
            match reader.read(&mut rec) {
                Ok(true) => out.push(
                    (0..rec.len())
                        .map(|i| rec.get(i).map(str::to_string))
                        .collect(),
                ),
                Ok(false) => return Ok(out),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    #[test]
    fn an_unclosed_quote_at_the_end_is_an_error_naming_its_line() {
        let err = read_all(b"id,name\n3,\"cy\n4,di\n").unwrap_err();
        assert_eq!(
            err,
            "line 2: a quoted field is never closed (a `\"` is missing)"
        );
        // An escaped quote at the very end does not close the field either.
        assert!(read_all(b"a\n\"x\"\"").is_err());
    }

    #[test]
    fn closed_quotes_at_the_end_of_the_file_are_fine() {
        for text in [
            &b"a\n\"x\""[..],
            b"a\n\"x\"\"\"",
            b"a\n\"\"",
            b"a\n\"x\"y\"z",
            b"a,b\n\"x\n\"\r\n",
        ] {
            assert!(
                read_all(text).is_ok(),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: the reader never panics on any bytes, and what a writer quotes the way
    //! RFC 4180 says comes back exactly, NULL (an unquoted empty field) told apart from "".

    use super::*;
    use proptest::prelude::*;

    fn read_all(text: &[u8], capacity: usize) -> Result<Vec<Vec<Option<String>>>, ReadError> {
        let mut reader = CsvReader::new(io::BufReader::with_capacity(capacity, text));
        let mut rec = Record::default();
        let mut out = Vec::new();
        while reader.read(&mut rec)? {
            out.push(
                (0..rec.len())
                    .map(|i| rec.get(i).map(str::to_string))
                    .collect(),
            );
        }
        Ok(out)
    }

    /// One field as a writer would put it: NULL as nothing, text always quoted when it holds a
    /// quote, a comma, a line end, or is empty (so that "" stays an empty string).
    fn write_field(field: &Option<String>) -> String {
        match field {
            None => String::new(),
            Some(text) => format!("\"{}\"", text.replace('"', "\"\"")),
        }
    }

    fn field() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            1 => Just(None),
            1 => Just(Some(String::new())),
            6 => "[a-z\",\r\n é;\t']{0,12}".prop_map(Some),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn never_panics_on_any_bytes(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b','), Just(b'\n'), Just(b'\r'), Just(0xEFu8), any::<u8>()],
                0..200,
            ),
            capacity in 1usize..16,
        ) {
            let _ = read_all(&bytes, capacity);
        }

        #[test]
        fn written_records_read_back_exactly(
            width in 1usize..5,
            rows in proptest::collection::vec(proptest::collection::vec(field(), 4), 1..8),
            crlf in any::<bool>(),
            capacity in 1usize..16,
        ) {
            let rows: Vec<Vec<Option<String>>> = rows
                .into_iter()
                .map(|r| r.into_iter().take(width).collect())
                // A one-field record that is NULL is a blank line, which readers skip.
                .filter(|r: &Vec<Option<String>>| !(width == 1 && r[0].is_none()))
                .collect();
            let end = if crlf { "\r\n" } else { "\n" };
            let text: String = rows
                .iter()
                .map(|r| r.iter().map(write_field).collect::<Vec<_>>().join(",") + end)
                .collect();
            let back = read_all(text.as_bytes(), capacity)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, rows);
        }
    }
}
