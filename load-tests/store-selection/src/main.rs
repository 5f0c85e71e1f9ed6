use std::time::Instant;
const T: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("audit");
fn key(i: u64) -> Vec<u8> { format!("M{:08}\0{:020}", i % 100_000, i).into_bytes() }
fn main() {
    let batches: u64 = std::env::args().nth(1).unwrap().parse().unwrap(); let per: u64 = std::env::args().nth(2).unwrap().parse().unwrap(); let val = vec![7u8; 300];
    let n = batches * per;
    // redb
    let dir = std::env::temp_dir().join("sb-redb"); let _ = std::fs::remove_dir_all(&dir); std::fs::create_dir_all(&dir).unwrap();
    let db = redb::Database::create(dir.join("db")).unwrap();
    let t = Instant::now();
    for b in 0..batches { let w = db.begin_write().unwrap(); { let mut tb = w.open_table(T).unwrap(); for i in 0..per { tb.insert(key(b*per+i).as_slice(), val.as_slice()).unwrap(); } } w.commit().unwrap(); }
    let e = t.elapsed(); println!("redb  append: {} batches x {} (fsync each): {:.0} rec/s, {:.2} ms/commit", batches, per, n as f64 / e.as_secs_f64(), e.as_secs_f64()*1e3/batches as f64);
    use redb::ReadableDatabase;
    let t = Instant::now(); let r = db.begin_read().unwrap(); let tb = r.open_table(T).unwrap(); let mut hit=0;
    for i in 0..200_000u64 { let k = key((i * 7919) % n); if tb.get(k.as_slice()).unwrap().is_some() { hit+=1; } }
    let e = t.elapsed(); println!("redb  point read: {:.0} reads/s ({} hits), {:.2} us/read", 200_000.0 / e.as_secs_f64(), hit, e.as_secs_f64()*1e6/200_000.0);
    // fjall
    let dir = std::env::temp_dir().join("sb-fjall"); let _ = std::fs::remove_dir_all(&dir);
    let db = fjall::Database::builder(&dir).open().unwrap();
    let ks = db.keyspace("audit", fjall::KeyspaceCreateOptions::default).unwrap();
    let t = Instant::now();
    for b in 0..batches { let mut wb = db.batch(); for i in 0..per { wb.insert(&ks, key(b*per+i), val.as_slice()); } wb.commit().unwrap(); db.persist(fjall::PersistMode::SyncAll).unwrap(); }
    let e = t.elapsed(); println!("fjall append: {} batches x {} (fsync each): {:.0} rec/s, {:.2} ms/commit", batches, per, n as f64 / e.as_secs_f64(), e.as_secs_f64()*1e3/batches as f64);
    let t = Instant::now(); let mut hit=0;
    for i in 0..200_000u64 { let k = key((i * 7919) % n); if ks.get(&k).unwrap().is_some() { hit+=1; } }
    let e = t.elapsed(); println!("fjall point read: {:.0} reads/s ({} hits), {:.2} us/read", 200_000.0 / e.as_secs_f64(), hit, e.as_secs_f64()*1e6/200_000.0);
}
