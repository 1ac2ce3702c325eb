//! The PostgreSQL fixture: real servers that accept connections, run side by
//! side and survive a stop/start with their data.
#![allow(clippy::unwrap_used)]

use ember_testenv::Postgres;
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn two_servers_run_side_by_side_and_answer_queries() {
    let (a, b) =
        tokio::task::spawn_blocking(|| (Postgres::start().unwrap(), Postgres::start().unwrap())).await.unwrap();
    assert_ne!(a.port(), b.port());
    let mut conn_a = PgConnection::connect(&a.url()).await.unwrap();
    let mut conn_b = PgConnection::connect(&b.url()).await.unwrap();
    sqlx::query("CREATE TABLE only_in_a (x int)").execute(&mut conn_a).await.unwrap();
    let (one,): (i32,) = sqlx::query_as("SELECT 1").fetch_one(&mut conn_b).await.unwrap();
    assert_eq!(one, 1);
    let in_b: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('only_in_a')::text").fetch_one(&mut conn_b).await.unwrap();
    assert_eq!(in_b, None, "servers must not share data");
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let pg = tokio::task::spawn_blocking(|| Postgres::start().unwrap()).await.unwrap();
    let url = format!("postgres://postgres:not-the-password@127.0.0.1:{}/postgres", pg.port());
    assert!(PgConnection::connect(&url).await.is_err());
}

#[tokio::test]
async fn data_survives_stop_and_start() {
    let mut pg = tokio::task::spawn_blocking(|| Postgres::start().unwrap()).await.unwrap();
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    sqlx::raw_sql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)").execute(&mut conn).await.unwrap();
    drop(conn);
    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    assert!(PgConnection::connect(&pg.url()).await.is_err(), "a stopped server must refuse connections");
    let pg = tokio::task::spawn_blocking(move || {
        pg.start_again().unwrap();
        pg
    })
    .await
    .unwrap();
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    let (x,): (i32,) = sqlx::query_as("SELECT x FROM kept").fetch_one(&mut conn).await.unwrap();
    assert_eq!(x, 42);
}
