//! Unit tests of the publisher.

use super::*;

#[test]
fn backoff_windows_double_up_to_the_cap_and_honour_retry_after() {
    let r = RetryPolicy::default();
    assert_eq!(r.window(0), Duration::from_millis(200));
    assert_eq!(r.window(3), Duration::from_millis(1600));
    assert_eq!(r.window(10), Duration::from_secs(5));
    assert_eq!(r.window(u32::MAX), Duration::from_secs(5));
    for a in 0..6 {
        assert!(r.delay(a, None) < r.window(a));
        assert!(r.delay(a, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
        assert_eq!(
            r.delay(a, Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
    }
}

#[test]
fn batch_results_read_both_shapes() {
    let rs: Vec<BatchItemResult> = serde_json::from_str(
        r#"[{"offset":3,"epoch":"e"},{"error":{"code":"forbidden","message":"no"}}]"#,
    )
    .unwrap();
    assert_eq!(
        rs[0],
        BatchItemResult::Published(PublishResult {
            offset: 3,
            epoch: "e".into()
        })
    );
    assert!(matches!(&rs[1], BatchItemResult::Failed { error } if error.code == "forbidden"));
    assert_eq!(new_key().len(), 32);
    assert_ne!(new_key(), new_key());
}
