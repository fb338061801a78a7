//! A check of a Parquet file's page headers before the `parquet` crate decodes it: that crate
//! trusts the sizes a page header declares, so a corrupt file of a few KB whose dictionary page
//! claims 1.5 billion values makes it allocate 12 GB (found by fuzzing). Here every page of
//! every column chunk is walked (its Thrift compact-protocol header read, its body skipped) and
//! refused when a page declares more than [`MAX_PAGE_BYTES`] uncompressed, or a dictionary page
//! more values than its bytes can hold (every dictionary value type takes at least 4 bytes).

/// The largest uncompressed page accepted (writers use pages of about 1 MiB).
pub const MAX_PAGE_BYTES: i64 = 256 << 20;

/// Nesting accepted in a page header (the real one is two structs deep).
const MAX_DEPTH: u32 = 16;

/// A cursor over the file's bytes.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

type Check<T> = Result<T, String>;

impl Cursor<'_> {
    fn byte(&mut self) -> Check<u8> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or("a page header runs past the end of the file")?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Check<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a page header holds a malformed integer".into())
    }

    fn zigzag(&mut self) -> Check<i64> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn skip(&mut self, n: u64) -> Check<()> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|e| *e <= self.data.len())
            .ok_or("a page header runs past the end of the file")?;
        self.pos = end;
        Ok(())
    }

    /// Skips one value of compact type `t`.
    fn skip_value(&mut self, t: u8, depth: u32) -> Check<()> {
        if depth > MAX_DEPTH {
            return Err("a page header nests too deep".into());
        }
        match t {
            1 | 2 => Ok(()),
            3 => self.skip(1),
            4..=6 => self.varint().map(|_| ()),
            7 => self.skip(8),
            8 => {
                let n = self.varint()?;
                self.skip(n)
            }
            9 | 10 => {
                let h = self.byte()?;
                let n = match h >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                self.count_fits(n)?;
                let et = h & 0x0f;
                for _ in 0..n {
                    self.skip_element(et, depth + 1)?;
                }
                Ok(())
            }
            11 => {
                let n = self.varint()?;
                if n > 0 {
                    self.count_fits(n)?;
                    let kv = self.byte()?;
                    for _ in 0..n {
                        self.skip_element(kv >> 4, depth + 1)?;
                        self.skip_element(kv & 0x0f, depth + 1)?;
                    }
                }
                Ok(())
            }
            12 => self.fields(depth + 1, |_, _, _| Ok(())),
            _ => Err(format!("a page header holds an unknown field type {t}")),
        }
    }

    /// Skips an element of a list, set or map, where a boolean takes a byte.
    fn skip_element(&mut self, t: u8, depth: u32) -> Check<()> {
        if t == 1 || t == 2 {
            self.skip(1)
        } else {
            self.skip_value(t, depth)
        }
    }

    /// Every element takes a byte at least: `n` of them must fit in what is left.
    fn count_fits(&self, n: u64) -> Check<()> {
        if n > (self.data.len() - self.pos) as u64 {
            return Err(format!(
                "a page header declares {n} elements past the end of the file"
            ));
        }
        Ok(())
    }

    /// Reads a struct's fields, calling `f(id, type, cursor)` for each: a value `f` does not
    /// read is skipped.
    fn fields(
        &mut self,
        depth: u32,
        mut f: impl FnMut(i16, u8, &mut Self) -> Check<()>,
    ) -> Check<()> {
        let mut last: i16 = 0;
        loop {
            let h = self.byte()?;
            if h == 0 {
                return Ok(());
            }
            let t = h & 0x0f;
            let id = match h >> 4 {
                0 => self.zigzag()? as i16,
                d => last.wrapping_add(i16::from(d)),
            };
            last = id;
            let before = self.pos;
            f(id, t, self)?;
            if self.pos == before {
                self.skip_value(t, depth)?;
            }
        }
    }
}

/// What a page header says about its page.
#[derive(Debug, Default)]
struct Header {
    kind: i64,
    uncompressed: i64,
    compressed: i64,
    dict_values: Option<i64>,
}

fn header(c: &mut Cursor<'_>) -> Check<Header> {
    let mut h = Header::default();
    c.fields(0, |id, t, c| {
        match (id, t) {
            (1, 5) => h.kind = c.zigzag()?,
            (2, 5) => h.uncompressed = c.zigzag()?,
            (3, 5) => h.compressed = c.zigzag()?,
            (7, 12) => c.fields(1, |id, t, c| {
                if (id, t) == (1, 5) {
                    h.dict_values = Some(c.zigzag()?);
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(h)
}

/// Walks the file's footer (its Thrift `FileMetaData`) without decoding it: a list or map
/// declaring more elements than bytes are left, or nesting too deep, is refused (the crate's
/// own parser skips such an element count one at a time: seconds on a file of a few KB).
pub fn check_footer(data: &[u8]) -> Check<()> {
    let n = data.len();
    if n < 12 || &data[n - 4..] != b"PAR1" {
        return Ok(()); // not Parquet: the reader says so
    }
    let meta_len =
        u32::from_le_bytes([data[n - 8], data[n - 7], data[n - 6], data[n - 5]]) as usize;
    let Some(start) = (n - 8).checked_sub(meta_len) else {
        return Ok(()); // the reader says the footer is too long
    };
    let mut c = Cursor {
        data: &data[..n - 8],
        pos: start,
    };
    c.fields(0, |_, _, _| Ok(()))
        .map_err(|m| m.replace("a page header", "the footer"))
}

/// Walks the pages of the column chunk at `start` (`len` bytes) of `data`.
pub fn check_chunk(data: &[u8], start: u64, len: u64) -> Check<()> {
    let end = start.saturating_add(len).min(data.len() as u64) as usize;
    let mut c = Cursor {
        data: &data[..end],
        pos: start.min(end as u64) as usize,
    };
    while c.pos < end {
        let h = header(&mut c)?;
        if h.uncompressed < 0 || h.compressed < 0 {
            return Err("a page declares a negative size".into());
        }
        if h.uncompressed > MAX_PAGE_BYTES {
            return Err(format!(
                "a page declares {} bytes uncompressed, more than {MAX_PAGE_BYTES}",
                h.uncompressed
            ));
        }
        // Page type 2 is a dictionary page.
        if let (2, Some(n)) = (h.kind, h.dict_values)
            && (n < 0 || n.saturating_mul(4) > h.uncompressed)
        {
            return Err(format!(
                "a dictionary page declares {n} values in {} bytes",
                h.uncompressed
            ));
        }
        c.skip(h.compressed as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compact-protocol page header: type, sizes, and a dictionary header of `values`.
    fn dict_page(uncompressed: u64, values: u64) -> Vec<u8> {
        let zz = |v: u64| {
            let mut z = v << 1;
            let mut out = Vec::new();
            loop {
                let b = (z & 0x7f) as u8;
                z >>= 7;
                if z == 0 {
                    out.push(b);
                    return out;
                }
                out.push(b | 0x80);
            }
        };
        let mut h = vec![0x15];
        h.extend(zz(2)); // field 1: type DICTIONARY_PAGE
        h.push(0x15);
        h.extend(zz(uncompressed)); // field 2
        h.push(0x15);
        h.extend(zz(4)); // field 3: compressed 4 bytes
        h.push(0x4c); // field 7 (delta 4): struct
        h.push(0x15);
        h.extend(zz(values)); // its field 1: num_values
        h.push(0x00); // end of the dictionary header
        h.push(0x00); // end of the page header
        h.extend([1, 2, 3, 4]);
        h
    }

    #[test]
    fn a_dictionary_page_claiming_more_values_than_its_bytes_is_refused() {
        let ok = dict_page(400, 100);
        assert_eq!(check_chunk(&ok, 0, ok.len() as u64), Ok(()));
        let bad = dict_page(400, 1_500_000_000);
        let e = check_chunk(&bad, 0, bad.len() as u64).unwrap_err();
        assert!(e.contains("1500000000 values in 400 bytes"), "{e}");
        let huge = dict_page(1 << 30, 10);
        assert!(check_chunk(&huge, 0, huge.len() as u64).is_err());
        // A header cut short is an error, not a panic.
        assert!(check_chunk(&ok[..5], 0, 5).is_err());
        // A map of 2^60 boolean pairs in a header (field 9, type map) is refused at once.
        let mut map = vec![
            0x1b, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0x11,
        ];
        map.extend([0u8; 8]);
        let e = check_chunk(&map, 0, map.len() as u64).unwrap_err();
        assert!(e.contains("elements past the end"), "{e}");
    }
}
