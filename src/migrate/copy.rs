//! The history table read by binary `COPY`: on a direct session, the cheapest read there is.
//! In the cold backend every run starts, planning a SELECT (opening the table's indexes,
//! estimating its size) costs more than reading 200 rows; `COPY <table> TO STDOUT` plans
//! nothing. It sends every column in the table's order, which migrun's CREATE TABLE fixes:
//! 15 columns, or 14 for a table an older release made (`adopted_from` came last, by ALTER).

use super::row::{HistoryRow, RowState, Timestamp};

/// The signature that starts binary `COPY` data.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The columns read, by position in migrun's table.
const ID: usize = 0;
const VERSION: usize = 1;
const DESCRIPTION: usize = 2;
const CHECKSUM: usize = 4;
const STATE: usize = 5;
const APPLIED_AT: usize = 6;
const ADOPTED_FROM: usize = 14;

/// Rows of a binary `COPY` of the whole table, each with its id (the order rows were written
/// in); an error says what does not look like migrun's table.
pub fn parse(data: &[u8]) -> Result<Vec<(i64, HistoryRow)>, String> {
    let mut input = Reader { data, at: 0 };
    if input.take(SIGNATURE.len())? != SIGNATURE {
        return Err("not binary COPY data".into());
    }
    let _flags = input.take(4)?;
    let extension = input.int(4)?;
    input.take(usize::try_from(extension).map_err(|_| "bad header".to_string())?)?;
    let mut rows = Vec::new();
    loop {
        let columns = match input.int(2)? {
            -1 => return Ok(rows),
            n @ (14 | 15) => n as usize,
            n => return Err(format!("{n} columns, not migrun's 15")),
        };
        let mut fields: Vec<Option<&[u8]>> = Vec::with_capacity(columns);
        for _ in 0..columns {
            fields.push(input.bytes()?);
        }
        rows.push(row(&fields)?);
    }
}

fn row(fields: &[Option<&[u8]>]) -> Result<(i64, HistoryRow), String> {
    let field = |at: usize| fields.get(at).copied().flatten();
    let int = |at: usize, name: &str| -> Result<Option<i64>, String> {
        field(at)
            .map(|b| b.try_into().map(i64::from_be_bytes).map_err(|_| format!("column {name} is not a bigint")))
            .transpose()
    };
    let text = |at: usize, name: &str| -> Result<Option<String>, String> {
        field(at).map(|b| String::from_utf8(b.to_vec()).map_err(|_| format!("column {name} is not UTF-8"))).transpose()
    };
    let id = int(ID, "id")?.ok_or("column id is NULL")?;
    let version = int(VERSION, "version")?.map(|v| u64::try_from(v).map_err(|_| format!("version {v}"))).transpose()?;
    let description = text(DESCRIPTION, "description")?.ok_or("column description is NULL")?;
    let checksum = text(CHECKSUM, "checksum")?.ok_or("column checksum is NULL")?;
    let state = match text(STATE, "state")?.ok_or("column state is NULL")?.as_str() {
        "started" => RowState::Started,
        _ => RowState::Applied,
    };
    let applied_at = Timestamp(int(APPLIED_AT, "applied_at")?.ok_or("column applied_at is NULL")?);
    let adopted_from = text(ADOPTED_FROM, "adopted_from")?;
    Ok((id, HistoryRow { version, description, checksum, state, applied_at, adopted_from }))
}

/// A cursor over binary `COPY` data.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.data.len()).ok_or("truncated")?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    /// A big-endian integer of 2 or 4 bytes.
    fn int(&mut self, width: usize) -> Result<i64, String> {
        let bytes = self.take(width)?;
        Ok(match bytes {
            [a, b] => i64::from(i16::from_be_bytes([*a, *b])),
            [a, b, c, d] => i64::from(i32::from_be_bytes([*a, *b, *c, *d])),
            _ => return Err("bad integer".into()),
        })
    }

    /// The bytes of one field; `None` for NULL.
    fn bytes(&mut self) -> Result<Option<&'a [u8]>, String> {
        match self.int(4)? {
            -1 => Ok(None),
            n => Ok(Some(self.take(usize::try_from(n).map_err(|_| "bad length")?)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// id, version, description, checksum, state, applied_at
    type CopyRow<'a> = (i64, Option<i64>, &'a str, &'a str, &'a str, i64);

    /// Rows of migrun's table, the other columns filled in, `adopted_from` present when
    /// `columns` is 15.
    fn copy_data(rows: &[CopyRow], columns: i16) -> Vec<u8> {
        let mut data = SIGNATURE.to_vec();
        data.extend_from_slice(&[0; 8]);
        for (id, version, description, checksum, state, at) in rows {
            data.extend_from_slice(&columns.to_be_bytes());
            let mut field = |bytes: Option<&[u8]>| match bytes {
                Some(b) => {
                    data.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    data.extend_from_slice(b);
                }
                None => data.extend_from_slice(&(-1i32).to_be_bytes()),
            };
            field(Some(&id.to_be_bytes()));
            field(version.map(|v| v.to_be_bytes()).as_ref().map(|b| b.as_slice()));
            field(Some(description.as_bytes()));
            field(Some(b"versioned"));
            field(Some(checksum.as_bytes()));
            field(Some(state.as_bytes()));
            field(Some(&at.to_be_bytes()));
            field(Some(&5i64.to_be_bytes()));
            for _ in 8..columns {
                field(None);
            }
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        data
    }

    #[test]
    fn reads_the_binary_copy_of_the_table() {
        for columns in [14, 15] {
            let data = copy_data(
                &[(2, Some(7), "b", "c2", "started", 0), (1, None, "views", "c1", "applied", 1_000_000)],
                columns,
            );
            let rows = parse(&data).unwrap();
            assert_eq!(rows.len(), 2);
            assert_eq!((rows[0].0, rows[0].1.version, rows[0].1.state), (2, Some(7), RowState::Started));
            assert_eq!((rows[1].1.description.as_str(), rows[1].1.checksum.as_str()), ("views", "c1"));
            assert_eq!(rows[1].1.applied_at.to_string(), "2000-01-01T00:00:01Z");
            assert_eq!(rows[1].1.adopted_from, None);
            for cut in [0, 5, 19, data.len() - 1] {
                assert!(parse(&data[..cut]).is_err(), "truncated at {cut}");
            }
        }
        assert_eq!(parse(&copy_data(&[], 15)).unwrap().len(), 0);
        assert!(parse(&copy_data(&[(1, None, "a", "c", "applied", 0)], 16)).unwrap_err().contains("16 columns"));
    }
}
