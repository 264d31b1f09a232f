//! QR codes of ticket codes: the module matrix (drawn as vector squares in
//! the PDF) and a PNG of it (inline in emails).

use qrcode::{Color, EcLevel, QrCode};

/// Modules of white border a reader needs around the code (the standard's
/// quiet zone).
pub const QUIET_ZONE: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("cannot make a QR code: {0}")]
    Encode(String),
    #[error("cannot write PNG: {0}")]
    Png(String),
}

/// A QR code's dark and light modules, without the quiet zone.
pub struct QrMatrix {
    pub width: usize,
    dark: Vec<bool>,
}

impl QrMatrix {
    /// Medium error correction: a ticket code (about 160 base32 characters,
    /// stored in the compact alphanumeric mode) stays a small symbol that
    /// still reads on a creased printout or a scratched phone screen.
    pub fn new(text: &str) -> Result<QrMatrix, QrError> {
        let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
            .map_err(|e| QrError::Encode(e.to_string()))?;
        let width = code.width();
        let dark = code
            .to_colors()
            .into_iter()
            .map(|c| c == Color::Dark)
            .collect();
        Ok(QrMatrix { width, dark })
    }

    pub fn is_dark(&self, x: usize, y: usize) -> bool {
        self.dark.get(y * self.width + x).copied().unwrap_or(false)
    }

    /// A grey-scale PNG, `scale` pixels per module, quiet zone included.
    pub fn to_png(&self, scale: usize) -> Result<Vec<u8>, QrError> {
        let scale = scale.max(1);
        let side = (self.width + 2 * QUIET_ZONE) * scale;
        let mut pixels = vec![255u8; side * side];
        for y in 0..self.width {
            for x in 0..self.width {
                if !self.is_dark(x, y) {
                    continue;
                }
                for dy in 0..scale {
                    let row = (y + QUIET_ZONE) * scale + dy;
                    let start = row * side + (x + QUIET_ZONE) * scale;
                    pixels[start..start + scale].fill(0);
                }
            }
        }
        let mut out = Vec::new();
        {
            let side = u32::try_from(side).map_err(|e| QrError::Png(e.to_string()))?;
            let mut encoder = png::Encoder::new(&mut out, side, side);
            encoder.set_color(png::ColorType::Grayscale);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder
                .write_header()
                .map_err(|e| QrError::Png(e.to_string()))?;
            writer
                .write_image_data(&pixels)
                .map_err(|e| QrError::Png(e.to_string()))?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_length_code_makes_a_png() {
        let code = "A".repeat(160);
        let qr = QrMatrix::new(&code).unwrap();
        assert!(qr.width >= 21);
        let png = qr.to_png(4).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
