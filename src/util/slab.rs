//! Storing an item in a vector whose freed places are reused: the arenas of runs, segments and
//! LRU entries that refer to each other by `u32` index.

/// Puts `item` in `items` at a place from `free` (freed indexes), else at the end; returns its
/// index.
#[inline]
pub fn put<T>(items: &mut Vec<T>, free: &mut Vec<u32>, item: T) -> u32 {
    match free.pop() {
        Some(i) => {
            items[i as usize] = item;
            i
        }
        None => {
            items.push(item);
            (items.len() - 1) as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_place_is_reused_before_the_vector_grows() {
        let (mut items, mut free) = (Vec::new(), Vec::new());
        assert_eq!(put(&mut items, &mut free, 'a'), 0);
        assert_eq!(put(&mut items, &mut free, 'b'), 1);
        free.push(0);
        assert_eq!(put(&mut items, &mut free, 'c'), 0);
        assert_eq!(put(&mut items, &mut free, 'd'), 2);
        assert_eq!(items, vec!['c', 'b', 'd']);
    }
}
