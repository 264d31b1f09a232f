//! Reads back the ESC/POS bytes this crate's renderer produces: the text as it
//! lands on the paper, the data of every QR code printed, and whether the
//! paper was cut. For tests, and for looking at what a printer was sent.
//!
//! It knows exactly the commands the renderer emits and refuses everything
//! else with an error naming the byte offset, so a change in the renderer (or
//! bytes from somewhere else) cannot be misread quietly:
//!
//! | bytes                 | meaning                        | read as          |
//! |-----------------------|--------------------------------|------------------|
//! | `ESC @`               | initialise                     | code page reset  |
//! | `ESC t 16`            | code page WPC1252              | (other pages: error) |
//! | `ESC a n`, `ESC E n`  | justification, emphasis        | ignored          |
//! | `GS ! n`              | character size                 | ignored          |
//! | `ESC d n`, `LF`       | print and feed n lines / one   | `n` newlines     |
//! | `GS ( k` cn=49        | QR: model, size, level, store, print | payload on print |
//! | `GS V m [n]`          | cut                            | `cut = true`     |

use super::charset::{char_for, PAGE_NUMBER};

const LF: u8 = 0x0A;
const ESC: u8 = 0x1B;
const GS: u8 = 0x1D;
/// `cn` of the QR code function family in `GS ( k`.
const QR: u8 = 49;

/// What a stream of ESC/POS bytes prints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The printed text, one `\n` per line feed.
    pub text: String,
    /// The data of each QR code printed, in order.
    pub qr_payloads: Vec<String>,
    /// Whether the stream cuts the paper.
    pub cut: bool,
}

impl Decoded {
    /// The printed lines, without trailing spaces.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.text.lines().map(str::trim_end)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown command {bytes:02X?} at byte {offset}")]
    Unknown { offset: usize, bytes: Vec<u8> },
    #[error("command at byte {offset} is cut short")]
    Truncated { offset: usize },
    #[error("code page {page} (at byte {offset}) is not one this decoder reads")]
    CodePage { offset: usize, page: u8 },
    #[error("byte {byte:#04x} at {offset} is not text in the selected code page")]
    NotText { offset: usize, byte: u8 },
    #[error("QR code printed at byte {offset} with no data stored")]
    EmptyQr { offset: usize },
    #[error("QR code data at byte {offset} is not UTF-8")]
    QrNotUtf8 { offset: usize },
}

/// Decodes `bytes`; see the module doc for what it accepts.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let mut out = Decoded::default();
    // Until `ESC t`, the printer's page is its power-on default, which we do
    // not assume anything about.
    let mut page_selected = false;
    let mut stored_qr: Option<String> = None;
    let mut i = 0;
    while i < bytes.len() {
        let at = |n: usize| {
            bytes
                .get(i + n)
                .copied()
                .ok_or(DecodeError::Truncated { offset: i })
        };
        let unknown = |len: usize| DecodeError::Unknown {
            offset: i,
            bytes: bytes[i..(i + len).min(bytes.len())].to_vec(),
        };
        match bytes[i] {
            LF => {
                out.text.push('\n');
                i += 1;
            }
            ESC => match at(1)? {
                b'@' => {
                    page_selected = false;
                    i += 2;
                }
                b't' => {
                    let page = at(2)?;
                    if page != PAGE_NUMBER {
                        return Err(DecodeError::CodePage { offset: i, page });
                    }
                    page_selected = true;
                    i += 3;
                }
                b'a' => match at(2)? {
                    0..=2 | 48..=50 => i += 3,
                    _ => return Err(unknown(3)),
                },
                b'E' => {
                    at(2)?;
                    i += 3;
                }
                b'd' => {
                    let lines = at(2)?;
                    out.text
                        .extend(std::iter::repeat_n('\n', usize::from(lines)));
                    i += 3;
                }
                _ => return Err(unknown(2)),
            },
            GS => match at(1)? {
                b'!' => {
                    at(2)?;
                    i += 3;
                }
                b'V' => match at(2)? {
                    0 | 1 | 48 | 49 => {
                        out.cut = true;
                        i += 3;
                    }
                    65 | 66 => {
                        at(3)?;
                        out.cut = true;
                        i += 4;
                    }
                    _ => return Err(unknown(3)),
                },
                b'(' if at(2)? == b'k' => {
                    let len = usize::from(at(3)?) | (usize::from(at(4)?) << 8);
                    let body = bytes
                        .get(i + 5..i + 5 + len)
                        .ok_or(DecodeError::Truncated { offset: i })?;
                    match body {
                        // Model (n1 = 49..51, n2 = 0), module size, error correction.
                        [QR, 65, 49..=51, 0] | [QR, 67, _] | [QR, 69, 48..=51] => {}
                        [QR, 80, 48, data @ ..] => {
                            let data = std::str::from_utf8(data)
                                .map_err(|_| DecodeError::QrNotUtf8 { offset: i })?;
                            stored_qr = Some(data.to_string());
                        }
                        [QR, 81, 48] => {
                            // The printer keeps the stored symbol, but the
                            // renderer always stores before each print.
                            let data =
                                stored_qr.take().ok_or(DecodeError::EmptyQr { offset: i })?;
                            out.qr_payloads.push(data);
                        }
                        _ => return Err(unknown(5 + len)),
                    }
                    i += 5 + len;
                }
                _ => return Err(unknown(3)),
            },
            byte => {
                let c = char_for(byte)
                    .filter(|_| byte.is_ascii() || page_selected)
                    .ok_or(DecodeError::NotText { offset: i, byte })?;
                out.text.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_feeds_qr_and_cut_are_read() {
        let mut bytes = vec![ESC, b'@', ESC, b't', 16, ESC, b'a', 1, GS, b'!', 0x11];
        bytes.extend_from_slice(&[b'M', 0xE9, ESC, b'd', 1]);
        bytes.extend_from_slice(&[GS, b'(', b'k', 4, 0, 49, 65, 50, 0]);
        bytes.extend_from_slice(&[GS, b'(', b'k', 5, 0, 49, 80, 48, b'A', b'B']);
        bytes.extend_from_slice(&[GS, b'(', b'k', 3, 0, 49, 81, 48]);
        bytes.extend_from_slice(&[GS, b'V', 65, 0]);
        let decoded = decode(&bytes).map_err(|e| e.to_string());
        assert_eq!(
            decoded,
            Ok(Decoded {
                text: "Mé\n".into(),
                qr_payloads: vec!["AB".into()],
                cut: true,
            })
        );
    }

    #[test]
    fn unknown_or_broken_sequences_are_errors() {
        // ESC * (bit image) is not something the renderer emits.
        assert!(matches!(
            decode(&[b'a', ESC, b'*', 0]),
            Err(DecodeError::Unknown { offset: 1, .. })
        ));
        assert!(matches!(
            decode(&[ESC, b't', 0]),
            Err(DecodeError::CodePage { page: 0, .. })
        ));
        // Accented text before any page was chosen.
        assert!(matches!(
            decode(&[0xE9]),
            Err(DecodeError::NotText { offset: 0, .. })
        ));
        assert!(matches!(
            decode(&[GS, b'(', b'k', 9, 0, 49, 80, 48]),
            Err(DecodeError::Truncated { offset: 0 })
        ));
        assert!(matches!(
            decode(&[GS, b'(', b'k', 3, 0, 49, 81, 48]),
            Err(DecodeError::EmptyQr { offset: 0 })
        ));
        assert!(matches!(decode(&[0x0D]), Err(DecodeError::NotText { .. })));
        assert!(matches!(
            decode(&[ESC]),
            Err(DecodeError::Truncated { offset: 0 })
        ));
    }
}
