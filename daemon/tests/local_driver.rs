//! The local service through the `Driver` trait (daemon/src/driver.rs), as a caller that only
//! knows the trait sees it: each method on a real OS-less guest, and the typed errors for an
//! unknown domain and a wrong state.

mod common;

use common::*;
use novacron_domain::{DomainState, Driver, ErrorCode};

#[tokio::test]
async fn every_driver_method_on_a_real_guest() {
    let env = Env::new();
    let svc = env.open().await;
    let driver: &dyn Driver = &svc;

    let summary = driver
        .define(osless("drv").validate().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (summary.name.as_str(), summary.state),
        ("drv", DomainState::Shutoff)
    );
    let info = driver.get("drv").await.unwrap();
    assert_eq!(info.summary.state, DomainState::Shutoff);
    assert_eq!(info.config.name, "drv");

    driver.start("drv").await.unwrap();
    assert_eq!(
        driver.get("drv").await.unwrap().summary.state,
        DomainState::Running
    );
    driver.suspend("drv").await.unwrap();
    assert_eq!(
        driver.get("drv").await.unwrap().summary.state,
        DomainState::Paused
    );
    // Suspending twice is a wrong state, not a silent success.
    assert_eq!(
        driver.suspend("drv").await.unwrap_err().code(),
        ErrorCode::WrongState
    );
    driver.resume("drv").await.unwrap();
    assert_eq!(
        driver.get("drv").await.unwrap().summary.state,
        DomainState::Running
    );
    let listed = driver.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].state),
        ("drv", DomainState::Running)
    );

    driver.destroy("drv").await.unwrap();
    assert_eq!(
        driver.get("drv").await.unwrap().summary.state,
        DomainState::Shutoff
    );
    assert_eq!(
        driver.resume("drv").await.unwrap_err().code(),
        ErrorCode::WrongState
    );
    driver.undefine("drv").await.unwrap();
    assert_eq!(
        driver.get("drv").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert!(driver.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unknown_domain_is_not_found_on_every_method() {
    let env = Env::new();
    let svc = env.open().await;
    let driver: &dyn Driver = &svc;
    let codes = [
        driver.get("nope").await.map(drop).unwrap_err().code(),
        driver.start("nope").await.unwrap_err().code(),
        driver
            .shutdown("nope", std::time::Duration::from_secs(1))
            .await
            .unwrap_err()
            .code(),
        driver.destroy("nope").await.unwrap_err().code(),
        driver.suspend("nope").await.unwrap_err().code(),
        driver.resume("nope").await.unwrap_err().code(),
        driver.reboot("nope").await.unwrap_err().code(),
        driver.undefine("nope").await.unwrap_err().code(),
    ];
    assert_eq!(codes, [ErrorCode::NotFound; 8]);
}
