//! The seed files' CSV reader: a streaming reader of RFC 4180 that keeps what general CSV readers
//! throw away (whether a field was quoted: `a,,b` has a NULL in the middle, `a,"",b` an empty
//! string) and refuses, with the row and the column, every input that `psql \copy ... csv` and
//! `sqlite3 .import` would store differently from each other or from what the file says:
//!
//! - a `"` that does not open the field (` "ab"`, `12" pizza`) or text after a closing quote
//!   (`"ab" `): psql drops such quotes and keeps the text around them, sqlite3 keeps the quotes;
//! - a NUL byte: PostgreSQL refuses it, SQLite stores text whose `length()` stops at it;
//! - a row larger than [`MAX_ROW_BYTES`]: memory stays bounded whatever the file holds.
//!
//! In a file whose header has one column, a blank line is a row holding NULL (psql's reading);
//! in wider files blank lines are skipped. Input is UTF-8, or Latin-1 / Windows-1252 decoded to
//! UTF-8 on the way in ([`Encoding`]); the delimiter is any ASCII punctuation, space or tab.
//!
//! One record is held at a time, in buffers that are reused. The reader counts lines (a quoted
//! field may span several) so errors can name the line a record starts on.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// The largest row (the unescaped bytes of all its fields) the reader accepts: 64 MiB. A longer
/// line or field is an error naming its row and column, so a runaway file (a missing closing
/// quote in a huge file, a link to `/dev/zero`) cannot take the machine's memory.
pub(crate) const MAX_ROW_BYTES: usize = 64 * 1024 * 1024;

/// The most fields one row may have: far more than a table can have columns (PostgreSQL 1,600,
/// SQLite 2,000 by default), few enough that a line of delimiters alone keeps memory bounded.
pub(crate) const MAX_FIELDS: usize = 65_536;

/// What a seed file is written in: its delimiter and its character encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dialect {
    pub(crate) delimiter: u8,
    pub(crate) encoding: Encoding,
}

impl Default for Dialect {
    fn default() -> Self {
        Dialect {
            delimiter: b',',
            encoding: Encoding::Utf8,
        }
    }
}

/// The character encodings a seed file may be in. Latin-1 is ISO-8859-1 as PostgreSQL's `LATIN1`
/// reads it (every byte is the code point of the same number); Windows-1252 is PostgreSQL's
/// `WIN1252` (0x80-0x9F are `€`, curly quotes, ...; the five bytes it leaves undefined are
/// refused, as PostgreSQL refuses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Utf8,
    Latin1,
    Windows1252,
}

impl Encoding {
    /// The encoding named `name`: PostgreSQL's names and the usual aliases, in any case, with or
    /// without `-` and `_` (`UTF8`, `utf-8`, `LATIN1`, `ISO-8859-1`, `WIN1252`, `windows-1252`,
    /// `cp1252`).
    pub(crate) fn parse(name: &str) -> Result<Encoding, String> {
        let folded: String = name
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .collect::<String>()
            .to_ascii_lowercase();
        match folded.as_str() {
            "utf8" | "unicode" => Ok(Encoding::Utf8),
            "latin1" | "iso88591" | "l1" => Ok(Encoding::Latin1),
            "win1252" | "windows1252" | "cp1252" => Ok(Encoding::Windows1252),
            _ => Err(format!(
                "unknown encoding `{name}` (known: UTF8, LATIN1 (ISO-8859-1), WIN1252 (Windows-1252))"
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "UTF-8",
            Encoding::Latin1 => "LATIN1",
            Encoding::Windows1252 => "WIN1252",
        }
    }
}

/// Parses `--delimiter`: one ASCII punctuation character, a space, or a tab (`\t` or `tab`).
pub(crate) fn parse_delimiter(text: &str) -> Result<u8, String> {
    let byte = match text {
        "\\t" | "tab" | "TAB" | "\t" => b'\t',
        _ if text.len() == 1 => text.as_bytes()[0],
        _ => {
            return Err(format!(
                "`{text}` is not one character (use `;`, `|`, `tab`, ...)"
            ))
        }
    };
    if byte == b'"' || !(byte.is_ascii_punctuation() || byte == b' ' || byte == b'\t') {
        return Err(format!(
            "`{text}` cannot separate fields: use an ASCII punctuation character other than `\"`, a space, or `tab`"
        ));
    }
    Ok(byte)
}

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
        // The record was checked to be UTF-8 when it was read, so this never fails.
        std::str::from_utf8(self.bytes(i)).ok()
    }

    pub(crate) fn is_null(&self, i: usize) -> bool {
        !self.quoted[i] && self.bytes(i).is_empty()
    }

    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.quoted.clear();
    }

    fn end_field(&mut self, quoted: bool) {
        self.ends.push(self.data.len());
        self.quoted.push(quoted);
    }

    /// The index of the first field that is not valid UTF-8, if any.
    fn invalid_utf8_field(&self) -> Option<usize> {
        if std::str::from_utf8(&self.data).is_ok() {
            return None;
        }
        (0..self.len()).find(|&i| std::str::from_utf8(self.bytes(i)).is_err())
    }
}

/// Why a record could not be read. `field` is 0-based; `line` is where the record starts
/// (for an unclosed quote, where the quoted field starts).
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    /// The file is not a regular file (a FIFO, a device, a folder).
    NotRegular(String),
    NotText {
        line: u64,
        field: usize,
        encoding: Encoding,
    },
    /// A quoted field still open at the end of the file.
    UnclosedQuote {
        line: u64,
    },
    /// A `"` where it neither opens nor closes a field, or text after a closing quote.
    StrayQuote {
        line: u64,
        field: usize,
        after_closing: bool,
    },
    Nul {
        line: u64,
        field: usize,
    },
    TooLarge {
        line: u64,
        field: usize,
    },
    TooManyFields {
        line: u64,
    },
    /// A `\r` not followed by `\n`, outside quotes, in a file whose lines end with `\n`.
    LoneCr {
        line: u64,
    },
}

impl ReadError {
    /// The message with the data row it happened in (`row 3 (line 4), column 2: ...`).
    pub(crate) fn at_row(&self, row: u64) -> String {
        if let ReadError::LoneCr { .. } = self {
            // Found after the row it ends was handed out: the line says where.
            return self.to_string();
        }
        match self.location() {
            None => self.what(),
            Some((line, None)) => format!("row {row} (line {line}): {}", self.what()),
            Some((line, Some(field))) => {
                format!(
                    "row {row} (line {line}), column {}: {}",
                    field + 1,
                    self.what()
                )
            }
        }
    }

    /// The line and (0-based) field the error is at, when it is in the text.
    fn location(&self) -> Option<(u64, Option<usize>)> {
        match *self {
            ReadError::Io(_) | ReadError::NotRegular(_) => None,
            ReadError::UnclosedQuote { line }
            | ReadError::TooManyFields { line }
            | ReadError::LoneCr { line } => Some((line, None)),
            ReadError::NotText { line, field, .. }
            | ReadError::StrayQuote { line, field, .. }
            | ReadError::Nul { line, field }
            | ReadError::TooLarge { line, field } => Some((line, Some(field))),
        }
    }

    fn what(&self) -> String {
        match self {
            ReadError::Io(e) => format!("cannot read: {e}"),
            ReadError::NotRegular(what) => what.clone(),
            ReadError::NotText { encoding, .. } => match encoding {
                Encoding::Utf8 => "not valid UTF-8 (save the file as UTF-8, or name its encoding with --encoding)".to_string(),
                other => format!("holds a byte that is not a character in {}", other.name()),
            },
            ReadError::UnclosedQuote { .. } => {
                "a quoted field is never closed (a `\"` is missing)".to_string()
            }
            ReadError::StrayQuote {
                after_closing: false,
                ..
            } => "a `\"` inside a field that does not start with one (psql would drop it, sqlite3 would keep it): \
                  quote the whole field and double the quotes inside (\"12\"\" pizza\"), with nothing before the opening quote"
                .to_string(),
            ReadError::StrayQuote {
                after_closing: true,
                ..
            } => "text after the closing quote (psql would append it, sqlite3 would keep the quotes): \
                  put everything inside the quotes, and nothing between the closing quote and the next delimiter"
                .to_string(),
            ReadError::Nul { .. } => {
                "a NUL byte (0x00) in text: neither PostgreSQL nor SQLite can store it as text".to_string()
            }
            ReadError::LoneCr { .. } => "a carriage return (\\r) outside quotes that does not end the line \
                 (the file's lines end with \\n): psql refuses it; quote the field that holds it"
                .to_string(),
            ReadError::TooManyFields { .. } => {
                format!("the row has more than {MAX_FIELDS} fields")
            }
            ReadError::TooLarge { .. } => format!(
                "the row is larger than {} MiB, the most one CSV row may hold",
                MAX_ROW_BYTES / (1024 * 1024)
            ),
        }
    }
}

/// `line L, column C: what` (the form used for the header; data rows add the row: [`ReadError::at_row`]).
impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location() {
            None => f.write_str(&self.what()),
            Some((line, None)) => write!(f, "line {line}: {}", self.what()),
            Some((line, Some(field))) => {
                write!(f, "line {line}, column {}: {}", field + 1, self.what())
            }
        }
    }
}

impl std::error::Error for ReadError {}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Where the reader is inside the current record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the record's first byte (skipping the end of the previous line).
    Start,
    /// At the start of a field, after a delimiter.
    FieldStart,
    Unquoted,
    Quoted,
    /// Just read a `"` inside a quoted field: it closes the field, or a second `"` follows.
    QuoteInQuoted,
}

/// What the bytes seen so far say.
enum Step {
    /// Need more input.
    More,
    /// A record is complete.
    Record,
    Failed(ReadError),
}

/// The byte classes the scanning loops stop at.
const STOP_NONE: u8 = 0;
const STOP_UNQUOTED: u8 = 1;
const STOP_QUOTED: u8 = 2;

/// The parsing state, kept apart from the input so both can be borrowed at once.
struct Parser {
    delimiter: u8,
    /// For each byte: whether an unquoted or a quoted field must stop at it.
    stops: [u8; 256],
    state: State,
    /// The previous record ended with `\r`: a `\n` right after belongs to it.
    pending_cr: bool,
    /// A `\n` ended a line: from then on a `\r` alone is data out of place, not a line end.
    seen_lf: bool,
    /// Set after the header: a blank line is a one-field NULL record.
    blank_is_null: bool,
    line: u64,
    quote_line: u64,
}

impl Parser {
    fn new(delimiter: u8) -> Parser {
        let mut stops = [STOP_NONE; 256];
        for b in [delimiter, b'"', b'\n', b'\r', 0] {
            stops[b as usize] |= STOP_UNQUOTED;
        }
        for b in [b'"', b'\n', 0] {
            stops[b as usize] |= STOP_QUOTED;
        }
        Parser {
            delimiter,
            stops,
            state: State::Start,
            pending_cr: false,
            seen_lf: false,
            blank_is_null: false,
            line: 1,
            quote_line: 1,
        }
    }

    /// Appends `bytes` to the current field, refusing a row past the limit.
    fn push(&self, rec: &mut Record, bytes: &[u8]) -> Result<(), ReadError> {
        if rec.data.len() + bytes.len() > MAX_ROW_BYTES {
            return Err(ReadError::TooLarge {
                line: rec.line,
                field: rec.len(),
            });
        }
        rec.data.extend_from_slice(bytes);
        Ok(())
    }

    /// Ends a field at a delimiter: another one starts.
    fn next_field(&mut self, rec: &mut Record, quoted: bool) -> Result<(), ReadError> {
        rec.end_field(quoted);
        if rec.len() >= MAX_FIELDS {
            return Err(ReadError::TooManyFields { line: rec.line });
        }
        self.state = State::FieldStart;
        Ok(())
    }

    /// Ends the record at a line end `b` (`\r` or `\n`).
    fn end_line(&mut self, b: u8) {
        if b == b'\n' {
            self.line += 1;
            self.seen_lf = true;
        } else {
            self.pending_cr = true;
        }
        self.state = State::Start;
    }

    /// Reads from `buf` into `rec`; returns the bytes used and what they gave.
    fn feed(&mut self, buf: &[u8], rec: &mut Record) -> (usize, Step) {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                State::Start => {
                    if std::mem::take(&mut self.pending_cr) {
                        if b == b'\n' {
                            self.line += 1;
                            self.seen_lf = true;
                            i += 1;
                            continue;
                        }
                        // A `\r` alone ends lines only in a file whose lines all end so (old
                        // Macs); in the middle of a `\n` file psql refuses it as data.
                        if self.seen_lf {
                            return (i, Step::Failed(ReadError::LoneCr { line: self.line }));
                        }
                        self.line += 1;
                    }
                    if b == b'\n' || b == b'\r' {
                        i += 1;
                        if self.blank_is_null {
                            rec.line = self.line;
                            rec.end_field(false);
                            self.end_line(b);
                            return (i, Step::Record);
                        }
                        self.end_line(b);
                        continue;
                    }
                    rec.line = self.line;
                    self.state = State::FieldStart;
                }
                State::FieldStart => {
                    if b == b'"' {
                        self.quote_line = self.line;
                        self.state = State::Quoted;
                        i += 1;
                    } else {
                        self.state = State::Unquoted;
                    }
                }
                State::Unquoted => match self.take_run(buf, &mut i, STOP_UNQUOTED, rec) {
                    Err(e) => return (i, Step::Failed(e)),
                    Ok(None) => break,
                    Ok(Some(b)) => {
                        if let Some(step) = self.after_field(b, rec, false) {
                            return (i, step);
                        }
                    }
                },
                State::Quoted => match self.take_run(buf, &mut i, STOP_QUOTED, rec) {
                    Err(e) => return (i, Step::Failed(e)),
                    Ok(None) => break,
                    Ok(Some(b'"')) => self.state = State::QuoteInQuoted,
                    Ok(Some(b'\n')) => {
                        self.line += 1;
                        if let Err(e) = self.push(rec, b"\n") {
                            return (i, Step::Failed(e));
                        }
                    }
                    Ok(Some(b)) => return (i, Step::Failed(self.refuse(b, rec, false))),
                },
                State::QuoteInQuoted => {
                    i += 1;
                    if b == b'"' {
                        if let Err(e) = self.push(rec, b"\"") {
                            return (i, Step::Failed(e));
                        }
                        self.state = State::Quoted;
                    } else if let Some(step) = self.after_field(b, rec, true) {
                        return (i, step);
                    }
                }
            }
        }
        (i, Step::More)
    }

    /// Pushes the bytes from `buf[*i]` up to the first one `mask` stops at, and steps past that
    /// byte, returning it; `None` when `buf` ends first.
    #[inline]
    fn take_run(
        &mut self,
        buf: &[u8],
        i: &mut usize,
        mask: u8,
        rec: &mut Record,
    ) -> Result<Option<u8>, ReadError> {
        let start = *i;
        while *i < buf.len() && self.stops[buf[*i] as usize] & mask == 0 {
            *i += 1;
        }
        self.push(rec, &buf[start..*i])?;
        let Some(&b) = buf.get(*i) else {
            return Ok(None);
        };
        *i += 1;
        Ok(Some(b))
    }

    /// Byte `b` just after a field (`quoted` when it was): a delimiter starts the next field, a
    /// line end ends the record, anything else is refused. `None` when reading goes on.
    #[inline]
    fn after_field(&mut self, b: u8, rec: &mut Record, quoted: bool) -> Option<Step> {
        if b == self.delimiter {
            self.next_field(rec, quoted).err().map(Step::Failed)
        } else if b == b'\n' || b == b'\r' {
            rec.end_field(quoted);
            self.end_line(b);
            Some(Step::Record)
        } else {
            Some(Step::Failed(self.refuse(b, rec, quoted)))
        }
    }

    /// The error for byte `b` where it cannot be: a NUL anywhere, or a misplaced quote.
    fn refuse(&self, b: u8, rec: &Record, after_closing: bool) -> ReadError {
        let (line, field) = (rec.line, rec.len());
        if b == 0 {
            ReadError::Nul { line, field }
        } else {
            ReadError::StrayQuote {
                line,
                field,
                after_closing,
            }
        }
    }

    /// At the end of the input: the last record, if one was started.
    fn finish(&mut self, rec: &mut Record) -> Step {
        let quoted = match self.state {
            State::Start => return Step::More,
            State::Quoted => {
                return Step::Failed(ReadError::UnclosedQuote {
                    line: self.quote_line,
                })
            }
            State::QuoteInQuoted => true,
            State::FieldStart | State::Unquoted => false,
        };
        rec.end_field(quoted);
        self.state = State::Start;
        Step::Record
    }
}

pub(crate) struct CsvReader<R> {
    input: R,
    parser: Parser,
    encoding: Encoding,
    /// Input bytes consumed so far (after decoding).
    bytes: u64,
    /// Records read so far (the first is the header).
    records: u64,
    /// Whether the start of the input was checked for a byte order mark.
    started: bool,
}

/// A reader of a seed file, as [`CsvReader::open`] makes it.
pub(crate) type FileReader = CsvReader<Box<dyn BufRead>>;

impl CsvReader<Box<dyn BufRead>> {
    /// Opens a seed file (refusing anything but a regular file) in the given dialect.
    pub(crate) fn open(path: &Path, dialect: Dialect) -> Result<Self, ReadError> {
        let file = crate::files::open_regular(path).map_err(|e| match e {
            crate::files::OpenError::Io(e) => ReadError::Io(e),
            e => ReadError::NotRegular(format!("`{}`: {e}", path.display())),
        })?;
        let input: Box<dyn BufRead> = match dialect.encoding {
            Encoding::Utf8 => Box::new(BufReader::with_capacity(256 * 1024, file)),
            single => Box::new(SingleByte::new(file, single)),
        };
        let mut reader = CsvReader::with_delimiter(input, dialect.delimiter);
        reader.encoding = dialect.encoding;
        Ok(reader)
    }
}

impl<R: BufRead> CsvReader<R> {
    pub(crate) fn with_delimiter(input: R, delimiter: u8) -> Self {
        CsvReader {
            input,
            parser: Parser::new(delimiter),
            encoding: Encoding::Utf8,
            bytes: 0,
            records: 0,
            started: false,
        }
    }

    /// Input bytes consumed so far (for progress by bytes).
    pub(crate) fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// Reads the next record into `rec`; `Ok(false)` at the end of the input. The first record is
    /// the header. Blank lines are skipped, except after a one-column header, where each is a row
    /// holding NULL (as psql reads them).
    pub(crate) fn read(&mut self, rec: &mut Record) -> Result<bool, ReadError> {
        if !self.started {
            self.started = true;
            // Excel writes a UTF-8 byte order mark; it is not part of the first column's name.
            if self.encoding == Encoding::Utf8
                && self.input.fill_buf()?.starts_with(b"\xEF\xBB\xBF")
            {
                self.input.consume(3);
                self.bytes += 3;
            }
        }
        rec.clear();
        loop {
            let buf = self.input.fill_buf()?;
            let step = if buf.is_empty() {
                match self.parser.finish(rec) {
                    Step::More => return Ok(false),
                    step => step,
                }
            } else {
                let (used, step) = self.parser.feed(buf, rec);
                self.input.consume(used);
                self.bytes += used as u64;
                step
            };
            match step {
                Step::More => {}
                Step::Failed(e) => return Err(e),
                Step::Record => return self.complete(rec).map(|()| true),
            }
        }
    }

    fn complete(&mut self, rec: &Record) -> Result<(), ReadError> {
        if let Some(field) = rec.invalid_utf8_field() {
            return Err(ReadError::NotText {
                line: rec.line,
                field,
                encoding: self.encoding,
            });
        }
        self.records += 1;
        if self.records == 1 {
            self.parser.blank_is_null = rec.len() == 1;
        }
        Ok(())
    }
}

/// A single-byte encoding decoded to UTF-8 as it is read. A byte the encoding leaves undefined
/// becomes 0xFF, which is never UTF-8, so the record holding it is refused with its row and column.
struct SingleByte<R> {
    inner: R,
    encoding: Encoding,
    raw: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
}

impl<R: Read> SingleByte<R> {
    fn new(inner: R, encoding: Encoding) -> Self {
        SingleByte {
            inner,
            encoding,
            raw: vec![0; 128 * 1024],
            out: Vec::with_capacity(3 * 128 * 1024),
            pos: 0,
        }
    }
}

/// Windows-1252's 0x80-0x9F (0 where it defines no character); 0xA0-0xFF are Latin-1's.
const WIN1252_HIGH: [u16; 32] = [
    0x20AC, 0, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0, 0x017D, 0, 0, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC,
    0x2122, 0x0161, 0x203A, 0x0153, 0, 0x017E, 0x0178,
];

fn decode_byte(encoding: Encoding, b: u8) -> Option<char> {
    match (encoding, b) {
        (Encoding::Windows1252, 0x80..=0x9F) => {
            char::from_u32(u32::from(WIN1252_HIGH[usize::from(b - 0x80)])).filter(|&c| c != '\0')
        }
        _ => Some(char::from(b)),
    }
}

impl<R: Read> Read for SingleByte<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(buf.len());
            buf[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for SingleByte<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.out.len() {
            self.out.clear();
            self.pos = 0;
            let n = loop {
                match self.inner.read(&mut self.raw) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            for &b in &self.raw[..n] {
                if b.is_ascii() {
                    self.out.push(b);
                    continue;
                }
                match decode_byte(self.encoding, b) {
                    Some(c) => {
                        let mut utf8 = [0; 4];
                        self.out
                            .extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                    }
                    None => self.out.push(0xFF),
                }
            }
        }
        Ok(&self.out[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.out.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rows = Vec<(u64, Vec<Option<String>>)>;

    fn read_with(text: &[u8], delimiter: u8, capacity: usize) -> Result<Rows, ReadError> {
        let mut reader =
            CsvReader::with_delimiter(io::BufReader::with_capacity(capacity, text), delimiter);
        let mut rec = Record::default();
        let mut out = Vec::new();
        while reader.read(&mut rec)? {
            let fields = (0..rec.len())
                .map(|i| rec.get(i).map(str::to_string))
                .collect();
            out.push((rec.line, fields));
        }
        Ok(out)
    }

    fn all(text: &[u8]) -> Rows {
        read_with(text, b',', 3).unwrap()
    }

    fn err(text: &[u8]) -> String {
        read_with(text, b',', 2).unwrap_err().at_row(9)
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
    fn blank_lines_are_skipped_in_wider_files() {
        let rows = all(b"a,b\n\n1,x\n\r\n\n2,y\n\n");
        assert_eq!(
            rows,
            vec![
                (1, vec![s("a"), s("b")]),
                (3, vec![s("1"), s("x")]),
                (6, vec![s("2"), s("y")])
            ]
        );
    }

    #[test]
    fn in_a_one_column_file_a_blank_line_is_a_null_row() {
        // psql's reading: `t\na\n\nb\n` is three rows, a, NULL, b.
        assert_eq!(
            all(b"t\na\n\nb\n"),
            vec![
                (1, vec![s("t")]),
                (2, vec![s("a")]),
                (3, vec![None]),
                (4, vec![s("b")])
            ]
        );
        // CRLF, a blank line at the end, and blank lines before the header (skipped).
        assert_eq!(
            all(b"\n\r\nt\r\n\r\n\"\"\r\n\r\n"),
            vec![
                (3, vec![s("t")]),
                (4, vec![None]),
                (5, vec![s("")]),
                (6, vec![None])
            ]
        );
        // The last line end closes the last row; it does not start another.
        assert_eq!(all(b"t\na\n").len(), 2);
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
        assert_eq!(
            err(b"a,b\n1,\xff\n"),
            "row 9 (line 2), column 2: not valid UTF-8 (save the file as UTF-8, or name its encoding with --encoding)"
        );
    }

    #[test]
    fn long_fields_are_read_whole() {
        let long = "x".repeat(10_000);
        let rows = all(format!("a\n\"{long}\"\n").as_bytes());
        assert_eq!(rows[1].1, vec![Some(long)]);
    }

    #[test]
    fn a_quote_that_does_not_open_the_field_is_refused_with_row_and_column() {
        for (text, column) in [
            (&b"id,name\n1, \"ab\"\n"[..], 2),
            (b"id,name\n1, \"Smith, John\"\n", 2),
            (b"id,name\n12\" pizza,1\n", 1),
            (b"id,name\n1,a\"b\"c\n", 2),
        ] {
            let e = err(text);
            assert!(
                e.starts_with(&format!(
                    "row 9 (line 2), column {column}: a `\"` inside a field"
                )),
                "{e}"
            );
        }
        for text in [&b"id,name\n1,\"ab\" \n"[..], b"id,name\n\"1\"x,2\n"] {
            let e = err(text);
            assert!(e.contains("text after the closing quote"), "{e}");
        }
    }

    #[test]
    fn a_nul_byte_is_refused_with_row_and_column() {
        for text in [
            &b"a,b\n1,x\0y\n"[..],
            b"a,b\n1,\"x\0y\"\n",
            b"a,b\n1,\"\"\0\n",
        ] {
            assert_eq!(
                err(text),
                "row 9 (line 2), column 2: a NUL byte (0x00) in text: neither PostgreSQL nor SQLite can store it as text",
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        assert!(read_with(b"a\0,b\n", b',', 5)
            .unwrap_err()
            .to_string()
            .starts_with("line 1, column 1: a NUL byte"));
    }

    #[test]
    fn an_unclosed_quote_at_the_end_is_an_error_naming_its_line() {
        assert_eq!(
            err(b"id,name\n3,\"cy\n4,di\n"),
            "row 9 (line 2): a quoted field is never closed (a `\"` is missing)"
        );
        // An escaped quote at the very end does not close the field either.
        assert!(read_with(b"a\n\"x\"\"", b',', 2).is_err());
    }

    #[test]
    fn closed_quotes_at_the_end_of_the_file_are_fine() {
        for text in [
            &b"a\n\"x\""[..],
            b"a\n\"x\"\"\"",
            b"a\n\"\"",
            b"a,b\n\"x\n\"\r\n",
            b"a,b\n1,",
        ] {
            assert!(
                read_with(text, b',', 2).is_ok(),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(all(b"a,b\n1,")[1].1, vec![s("1"), None]);
    }

    #[test]
    fn other_delimiters() {
        let rows = read_with(b"a;b\n\"x;y\";1,2\n;\n", b';', 4).unwrap();
        assert_eq!(rows[1].1, vec![s("x;y"), s("1,2")]);
        assert_eq!(rows[2].1, vec![None, None]);
        let rows = read_with(b"a\tb\nx y\t\"\"\n", b'\t', 4).unwrap();
        assert_eq!(rows[1].1, vec![s("x y"), s("")]);
        assert_eq!(parse_delimiter("tab"), Ok(b'\t'));
        assert_eq!(parse_delimiter("\\t"), Ok(b'\t'));
        assert_eq!(parse_delimiter(";"), Ok(b';'));
        for bad in ["\"", "a", "7", ";;", "", "\n", "é"] {
            assert!(parse_delimiter(bad).is_err(), "{bad:?}");
        }
    }

    fn decoded(bytes: &[u8], encoding: Encoding) -> Vec<u8> {
        let mut out = Vec::new();
        SingleByte::new(bytes, encoding)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn latin1_and_windows_1252_decode_to_utf8() {
        assert_eq!(
            decoded(b"caf\xe9 \x80", Encoding::Latin1),
            "café \u{80}".as_bytes()
        );
        assert_eq!(
            decoded(b"caf\xe9 \x80\x93\x9f", Encoding::Windows1252),
            "café €“Ÿ".as_bytes()
        );
        // Bytes Windows-1252 leaves undefined are not UTF-8 afterwards: the record is refused.
        assert_eq!(decoded(b"\x81", Encoding::Windows1252), b"\xff");
        assert_eq!(Encoding::parse("iso-8859-1"), Ok(Encoding::Latin1));
        assert_eq!(Encoding::parse("Windows-1252"), Ok(Encoding::Windows1252));
        assert_eq!(Encoding::parse("utf-8"), Ok(Encoding::Utf8));
        assert!(Encoding::parse("ebcdic").is_err());
    }

    #[test]
    fn a_row_over_the_limit_is_refused_and_memory_stays_bounded() {
        struct Endless;
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                buf.fill(b'x');
                Ok(buf.len())
            }
        }
        let mut reader = CsvReader::with_delimiter(
            io::BufReader::with_capacity(
                1 << 20,
                io::Cursor::new(b"a,b\n1,".to_vec()).chain(Endless),
            ),
            b',',
        );
        let mut rec = Record::default();
        assert!(reader.read(&mut rec).unwrap());
        match reader.read(&mut rec) {
            Err(e @ ReadError::TooLarge { line: 2, field: 1 }) => {
                assert_eq!(
                    e.at_row(1),
                    "row 1 (line 2), column 2: the row is larger than 64 MiB, the most one CSV row may hold"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(rec.data.capacity() <= 2 * MAX_ROW_BYTES);
    }

    #[test]
    fn a_carriage_return_alone_ends_lines_only_in_a_file_of_such_lines() {
        assert_eq!(
            all(b"v\ra\r\rb\r"),
            vec![
                (1, vec![s("v")]),
                (2, vec![s("a")]),
                (3, vec![None]),
                (4, vec![s("b")])
            ]
        );
        for text in [&b"v\na\rb\n"[..], b"id,v\n1,a\r2,b\n", b"id,v\r\n1,a\r\r\n"] {
            let e = err(text);
            assert!(e.starts_with("line 2: a carriage return"), "{e}");
        }
        // Inside quotes it is data.
        assert_eq!(all(b"v\n\"a\rb\"\n")[1].1, vec![s("a\rb")]);
    }

    #[test]
    fn a_row_of_too_many_fields_is_refused() {
        let mut text = b"a\n".to_vec();
        text.resize(text.len() + MAX_FIELDS + 10, b',');
        assert_eq!(
            read_with(&text, b',', 4096).unwrap_err().at_row(1),
            format!("row 1 (line 2): the row has more than {MAX_FIELDS} fields")
        );
        let mut ok = b"a\n".to_vec();
        ok.resize(ok.len() + MAX_FIELDS - 1, b',');
        assert_eq!(all(&ok)[1].1.len(), MAX_FIELDS);
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: the reader never panics on any bytes, and what a writer quotes the way
    //! RFC 4180 says comes back exactly, NULL (an unquoted empty field) told apart from "".

    use super::*;
    use proptest::prelude::*;

    fn read_all(
        text: &[u8],
        delimiter: u8,
        capacity: usize,
    ) -> Result<Vec<Vec<Option<String>>>, ReadError> {
        let mut reader =
            CsvReader::with_delimiter(io::BufReader::with_capacity(capacity, text), delimiter);
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

    /// One field as a writer would put it: NULL as nothing, text always quoted.
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
            6 => "[a-z\",\r\n é;\t'|]{0,12}".prop_map(Some),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn never_panics_on_any_bytes(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b','), Just(b'\n'), Just(b'\r'), Just(0u8), Just(0xEFu8), any::<u8>()],
                0..200,
            ),
            capacity in 1usize..16,
        ) {
            let _ = read_all(&bytes, b',', capacity);
        }

        #[test]
        fn written_records_read_back_exactly(
            width in 1usize..5,
            rows in proptest::collection::vec(proptest::collection::vec(field(), 4), 0..8),
            crlf in any::<bool>(),
            delimiter in prop_oneof![Just(b','), Just(b';'), Just(b'\t'), Just(b'|')],
            capacity in 1usize..16,
        ) {
            let sep = (delimiter as char).to_string();
            let header: Vec<Option<String>> = (0..width).map(|i| Some(format!("c{i}"))).collect();
            let mut rows: Vec<Vec<Option<String>>> = rows
                .into_iter()
                .map(|r| r.into_iter().take(width).collect())
                .collect();
            rows.insert(0, header);
            let end = if crlf { "\r\n" } else { "\n" };
            let text: String = rows
                .iter()
                .map(|r| r.iter().map(write_field).collect::<Vec<_>>().join(&sep) + end)
                .collect();
            let back = read_all(text.as_bytes(), delimiter, capacity)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, rows);
        }
    }
}
