//! The update encoding, version 1: the metric updates of one `process` or `tick` call, packed
//! into one little-endian buffer, as the `process` comment in `wit/analyzer.wit` specifies.
//!
//! Stage: analyzers (the bytes between an analyzer's updates and the host's registry).
//! Input: updates one at a time ([`Writer::update`]: the guest SDK, and the hostile test
//! analyzers' scaffold), or a returned buffer ([`Reader::new`]: the host, and the SDK's typed
//! view for analyzer tests). Output: the bytes; or, read back, one borrowed [`UpdateView`] per
//! update, or a [`DecodeError`] naming what is wrong and where. Reading allocates nothing;
//! writing appends to a `Vec<u8>` the caller owns.
//!
//! ```
//! use wasmtap_record::updates::{Label, Reader, Value, ValueView, Writer};
//!
//! let mut bytes = Vec::new();
//! let mut w = Writer::new(&mut bytes);
//! w.update(0, [Label::Device(2), Label::Ipv4(0x0a00_0001)].into_iter(), Value::CounterAdd(3.0));
//! w.update(1, [].into_iter(), Value::Histogram { counts: &[1, 0, 2], sum: 7.5, count: 3 });
//! w.finish();
//!
//! let mut r = Reader::new(&bytes)?;
//! assert_eq!(r.update_count(), 2);
//! let first = r.next().expect("one update")?;
//! assert_eq!(first.labels().collect::<Vec<_>>(), [Label::Device(2), Label::Ipv4(0x0a00_0001)]);
//! assert_eq!(first.value, ValueView::CounterAdd(3.0));
//! let Some(Ok(second)) = r.next() else { panic!("a second update") };
//! let ValueView::Histogram { counts, sum, count } = second.value else { panic!("a histogram") };
//! assert_eq!((counts.iter().collect::<Vec<_>>(), sum, count), (vec![1, 0, 2], 7.5, 3));
//! assert!(r.next().is_none());
//! # Ok::<(), wasmtap_record::updates::DecodeError>(())
//! ```

use alloc::vec::Vec;
use core::fmt;

/// The encoding version this crate writes and reads, in the buffer's first two bytes.
pub const VERSION: u16 = 1;
/// Size of the buffer header: version, reserved, update count.
pub const HEADER_LEN: usize = 8;
/// Byte offset of the header's `u32` update count.
const HEADER_COUNT: usize = 4;

/// The value kind byte of an update.
pub mod kind {
    /// An `f64` added to a counter.
    pub const COUNTER_ADD: u8 = 0;
    /// An `f64` gauge value and the `u64` packet time it was observed at.
    pub const GAUGE_SET: u8 = 1;
    /// Bucket counts, a sum and a count merged into a histogram.
    pub const HISTOGRAM: u8 = 2;
}

/// The tag byte of a label value.
pub mod tag {
    /// A `u32` byte length, then that many bytes of UTF-8.
    pub const TEXT: u8 = 0;
    /// A `u32`: the IPv4 address as a big-endian number.
    pub const IPV4: u8 = 1;
    /// Two `u64`: the IPv6 address' high and low halves.
    pub const IPV6: u8 = 2;
    /// A `u16` device index.
    pub const DEVICE: u8 = 3;
    /// An `i64`.
    pub const NUMBER: u8 = 4;
}

/// One label value, as written and as read back (text borrowed from the buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label<'a> {
    /// Free text.
    Text(&'a str),
    /// An IPv4 address as a big-endian number (10.0.0.1 is 0x0a000001).
    Ipv4(u32),
    /// An IPv6 address: its high and low 64 bits.
    Ipv6(u64, u64),
    /// A device index from the packet record.
    Device(u16),
    /// An integer.
    Number(i64),
}

impl Label<'_> {
    /// Bytes the label takes packed, with its tag.
    pub const fn packed_len(&self) -> usize {
        1 + match self {
            Label::Text(s) => 4 + s.len(),
            Label::Ipv4(_) => 4,
            Label::Ipv6(..) => 16,
            Label::Device(_) => 2,
            Label::Number(_) => 8,
        }
    }
}

/// The value of an update to write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// Added to a counter.
    CounterAdd(f64),
    /// The value and its packet time in ns.
    GaugeSet(f64, u64),
    /// Observations merged into a histogram.
    Histogram {
        /// One count per declared bucket and `+Inf` last, not cumulative.
        counts: &'a [u64],
        /// The observations' sum.
        sum: f64,
        /// How many observations.
        count: u64,
    },
}

impl Value<'_> {
    /// Bytes an update with this value and `labels` packed label bytes takes packed.
    pub const fn packed_len(&self, labels: usize) -> usize {
        4 + 1
            + 1
            + labels
            + match self {
                Value::CounterAdd(_) => 8,
                Value::GaugeSet(..) => 16,
                Value::Histogram { counts, .. } => 4 + 8 * counts.len() + 16,
            }
    }
}

/// Appends updates to a buffer: the header first, the count when [`Writer::finish`]ed.
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    count: u32,
}

impl<'a> Writer<'a> {
    /// Starts a buffer of updates at the end of `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        let start = out.len();
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&[0; HEADER_LEN - 2]);
        Self { out, start, count: 0 }
    }

    /// Appends one update. `labels` gives one value per label name of the family, in order;
    /// more than 255 are cut to 255 (the host then refuses the update for its label count).
    pub fn update<'l>(
        &mut self,
        family: u32,
        labels: impl ExactSizeIterator<Item = Label<'l>>,
        value: Value<'_>,
    ) {
        let out = &mut *self.out;
        out.extend_from_slice(&family.to_le_bytes());
        out.push(match value {
            Value::CounterAdd(_) => kind::COUNTER_ADD,
            Value::GaugeSet(..) => kind::GAUGE_SET,
            Value::Histogram { .. } => kind::HISTOGRAM,
        });
        let len = u8::try_from(labels.len()).unwrap_or(u8::MAX);
        out.push(len);
        for label in labels.take(usize::from(len)) {
            match label {
                Label::Text(s) => {
                    out.push(tag::TEXT);
                    out.extend_from_slice(
                        &u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes(),
                    );
                    out.extend_from_slice(s.as_bytes());
                }
                Label::Ipv4(a) => {
                    out.push(tag::IPV4);
                    out.extend_from_slice(&a.to_le_bytes());
                }
                Label::Ipv6(hi, lo) => {
                    out.push(tag::IPV6);
                    out.extend_from_slice(&hi.to_le_bytes());
                    out.extend_from_slice(&lo.to_le_bytes());
                }
                Label::Device(d) => {
                    out.push(tag::DEVICE);
                    out.extend_from_slice(&d.to_le_bytes());
                }
                Label::Number(n) => {
                    out.push(tag::NUMBER);
                    out.extend_from_slice(&n.to_le_bytes());
                }
            }
        }
        match value {
            Value::CounterAdd(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::GaugeSet(v, at) => {
                out.extend_from_slice(&v.to_le_bytes());
                out.extend_from_slice(&at.to_le_bytes());
            }
            Value::Histogram { counts, sum, count } => {
                let n = u32::try_from(counts.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&n.to_le_bytes());
                for c in counts {
                    out.extend_from_slice(&c.to_le_bytes());
                }
                out.extend_from_slice(&sum.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
        }
        self.count = self.count.saturating_add(1);
    }

    /// Updates written so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Writes the update count into the header.
    pub fn finish(self) {
        let at = self.start + HEADER_COUNT;
        if let Some(slot) = self.out.get_mut(at..at + 4) {
            slot.copy_from_slice(&self.count.to_le_bytes());
        }
    }
}

/// Why a buffer of updates does not parse. `at` is a byte offset into the buffer, `len` a
/// number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the fields: see the enum's comment
pub enum DecodeError {
    /// Fewer than [`HEADER_LEN`] bytes.
    NoHeader { len: usize },
    /// An encoding version this reader does not know.
    Version(u16),
    /// The reserved header bytes are not zero.
    Reserved,
    /// The buffer ends inside an update.
    Short { at: usize },
    /// A value kind other than those of [`kind`].
    Kind { at: usize, kind: u8 },
    /// A label tag other than those of [`tag`].
    Tag { at: usize, tag: u8 },
    /// A text label that is not UTF-8.
    Utf8 { at: usize },
    /// Bytes left after the last update the header counts.
    Trailing { at: usize, len: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::NoHeader { len } => {
                write!(f, "{len} bytes, shorter than the {HEADER_LEN}-byte header")
            }
            DecodeError::Version(v) => {
                write!(f, "encoding version {v}, where this host reads version {VERSION}")
            }
            DecodeError::Reserved => write!(f, "reserved header bytes that are not zero"),
            DecodeError::Short { at } => write!(f, "the buffer ends inside an update at byte {at}"),
            DecodeError::Kind { at, kind } => write!(f, "value kind {kind} at byte {at}"),
            DecodeError::Tag { at, tag } => write!(f, "label tag {tag} at byte {at}"),
            DecodeError::Utf8 { at } => write!(f, "a text label at byte {at} that is not UTF-8"),
            DecodeError::Trailing { at, len } => {
                write!(f, "{len} bytes after the last update, from byte {at}")
            }
        }
    }
}

impl core::error::Error for DecodeError {}

/// Bucket counts read in place: `u64`s, little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts<'a>(&'a [u8]);

impl<'a> Counts<'a> {
    /// How many counts.
    pub fn len(&self) -> usize {
        self.0.len() / 8
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The counts, in order (`+Inf` last).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = u64> + 'a {
        self.0
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
    }
}

/// The value of an update, read in place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueView<'a> {
    /// Added to a counter.
    CounterAdd(f64),
    /// The value and its packet time in ns.
    GaugeSet(f64, u64),
    /// Observations merged into a histogram.
    Histogram {
        /// One count per declared bucket and `+Inf` last, not cumulative.
        counts: Counts<'a>,
        /// The observations' sum.
        sum: f64,
        /// How many observations.
        count: u64,
    },
}

/// One update, read in place: its labels are parsed again, without checks, by
/// [`UpdateView::labels`] (the reader checked them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateView<'a> {
    /// Index into the families `init` returned.
    pub family: u32,
    /// The label values' bytes (tags and values).
    labels: &'a [u8],
    label_count: u8,
    /// The change to the series.
    pub value: ValueView<'a>,
}

impl<'a> UpdateView<'a> {
    /// How many label values the update carries.
    pub fn label_count(&self) -> usize {
        usize::from(self.label_count)
    }

    /// The label values, in order.
    pub fn labels(&self) -> Labels<'a> {
        Labels { cursor: Cursor { bytes: self.labels, at: 0 }, left: self.label_count }
    }
}

/// The label values of an [`UpdateView`], parsed again in place (the reader checked them).
pub struct Labels<'a> {
    cursor: Cursor<'a>,
    left: u8,
}

impl<'a> Iterator for Labels<'a> {
    type Item = Label<'a>;

    fn next(&mut self) -> Option<Label<'a>> {
        self.left = self.left.checked_sub(1)?;
        // Checked when the update was read; were it not, the iteration would end early.
        let label = self.cursor.label().ok();
        if label.is_none() {
            self.left = 0;
        }
        label
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

impl ExactSizeIterator for Labels<'_> {}

/// A position in the buffer being read.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(DecodeError::Short { at: self.at })?;
        let bytes = &self.bytes[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    fn f64(&mut self) -> Result<f64, DecodeError> {
        self.array().map(f64::from_le_bytes)
    }

    fn label(&mut self) -> Result<Label<'a>, DecodeError> {
        let at = self.at;
        Ok(match self.u8()? {
            tag::TEXT => {
                let len = self.u32()? as usize;
                let text = self.take(len)?;
                Label::Text(core::str::from_utf8(text).map_err(|_| DecodeError::Utf8 { at })?)
            }
            tag::IPV4 => Label::Ipv4(self.u32()?),
            tag::IPV6 => Label::Ipv6(self.u64()?, self.u64()?),
            tag::DEVICE => Label::Device(self.u16()?),
            tag::NUMBER => Label::Number(self.array().map(i64::from_le_bytes)?),
            tag => return Err(DecodeError::Tag { at, tag }),
        })
    }

    fn update(&mut self) -> Result<UpdateView<'a>, DecodeError> {
        let family = self.u32()?;
        let kind_at = self.at;
        let kind = self.u8()?;
        let label_count = self.u8()?;
        let labels_at = self.at;
        for _ in 0..label_count {
            self.label()?;
        }
        let labels = &self.bytes[labels_at..self.at];
        let value = match kind {
            kind::COUNTER_ADD => ValueView::CounterAdd(self.f64()?),
            kind::GAUGE_SET => ValueView::GaugeSet(self.f64()?, self.u64()?),
            kind::HISTOGRAM => {
                let n = self.u32()? as usize;
                let counts =
                    Counts(self.take(n.checked_mul(8).ok_or(DecodeError::Short { at: self.at })?)?);
                ValueView::Histogram { counts, sum: self.f64()?, count: self.u64()? }
            }
            kind => return Err(DecodeError::Kind { at: kind_at, kind }),
        };
        Ok(UpdateView { family, labels, label_count, value })
    }
}

/// Reads a buffer of updates: the header at once ([`Reader::new`]), then one update per
/// [`Iterator::next`], the first error ending the iteration.
pub struct Reader<'a> {
    cursor: Cursor<'a>,
    count: u32,
    left: u32,
    failed: bool,
}

impl<'a> Reader<'a> {
    /// Checks the header: its length, version and reserved bytes.
    pub fn new(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut cursor = Cursor { bytes, at: 0 };
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::NoHeader { len: bytes.len() });
        }
        let version = cursor.u16()?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        if cursor.u16()? != 0 {
            return Err(DecodeError::Reserved);
        }
        let count = cursor.u32()?;
        Ok(Self { cursor, count, left: count, failed: false })
    }

    /// The update count the header gives: known before any update is read.
    pub fn update_count(&self) -> u32 {
        self.count
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<UpdateView<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.left == 0 {
            let (at, len) = (self.cursor.at, self.cursor.bytes.len());
            if at == len {
                return None;
            }
            self.failed = true;
            return Some(Err(DecodeError::Trailing { at, len: len - at }));
        }
        self.left -= 1;
        let update = self.cursor.update();
        self.failed = update.is_err();
        Some(update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// How many updates a buffer reads as, or the first error.
    fn read(b: &[u8]) -> Result<usize, DecodeError> {
        Reader::new(b)?.try_fold(0, |n, u| u.map(|_| n + 1))
    }

    fn sample() -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut w = Writer::new(&mut bytes);
        let labels = [Label::Text("eth0"), Label::Ipv6(1, 2), Label::Number(-7)];
        w.update(3, labels.into_iter(), Value::GaugeSet(1.5, 99));
        w.update(0, [Label::Device(9)].into_iter(), Value::CounterAdd(2.0));
        w.finish();
        bytes
    }

    #[test]
    fn the_writer_writes_the_wit_layout_byte_for_byte() {
        let mut want = vec![1, 0, 0, 0, 2, 0, 0, 0];
        want.extend([3, 0, 0, 0, kind::GAUGE_SET, 3]);
        want.extend([tag::TEXT, 4, 0, 0, 0, b'e', b't', b'h', b'0']);
        want.push(tag::IPV6);
        want.extend(1u64.to_le_bytes());
        want.extend(2u64.to_le_bytes());
        want.push(tag::NUMBER);
        want.extend((-7i64).to_le_bytes());
        want.extend(1.5f64.to_le_bytes());
        want.extend(99u64.to_le_bytes());
        want.extend([0, 0, 0, 0, kind::COUNTER_ADD, 1, tag::DEVICE, 9, 0]);
        want.extend(2.0f64.to_le_bytes());
        assert_eq!(sample(), want);
    }

    #[test]
    fn every_cut_of_a_buffer_is_an_error_not_a_panic() {
        let bytes = sample();
        for len in 0..bytes.len() {
            assert!(read(&bytes[..len]).is_err(), "{len} bytes read as whole");
        }
        assert_eq!(read(&bytes), Ok(2));
    }

    #[test]
    fn each_fault_is_named_with_its_place() {
        let mut b = sample();
        b[0] = 2;
        assert_eq!(read(&b).err(), Some(DecodeError::Version(2)));
        let mut b = sample();
        b[2] = 1;
        assert_eq!(read(&b).err(), Some(DecodeError::Reserved));
        let mut b = sample();
        b[12] = 7;
        assert_eq!(read(&b).err(), Some(DecodeError::Kind { at: 12, kind: 7 }));
        let mut b = sample();
        b[14] = 9;
        assert_eq!(read(&b).err(), Some(DecodeError::Tag { at: 14, tag: 9 }));
        let mut b = sample();
        b[19] = 0xff;
        assert_eq!(read(&b).err(), Some(DecodeError::Utf8 { at: 14 }));
        let mut b = sample();
        b.push(0);
        assert_eq!(read(&b).err(), Some(DecodeError::Trailing { at: b.len() - 1, len: 1 }));
        let mut b = sample();
        b[4] = 3;
        assert_eq!(read(&b).err(), Some(DecodeError::Short { at: b.len() }));
        // A histogram claiming 2^32 - 1 bucket counts is short, not an allocation.
        let mut b = Vec::new();
        let mut w = Writer::new(&mut b);
        w.update(0, [].into_iter(), Value::Histogram { counts: &[1], sum: 1.0, count: 1 });
        w.finish();
        b[14..18].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read(&b).err(), Some(DecodeError::Short { at: 18 }));
    }
}
