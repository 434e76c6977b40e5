//! The `greetings` example as a test: a program written from the crate docs alone loses
//! no greeting to a newcomer, hears of a message nobody took, and learns the fate of a
//! first datagram.

#[path = "../examples/greetings.rs"]
#[allow(dead_code)] // its `main`
mod greetings;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_newcomer_hears_the_greeting_sent_the_moment_it_appeared() {
    let report = greetings::run(50).await.expect("the example runs");
    assert_eq!(report.newcomers, 100);
    assert_eq!(report.greeted, 100, "{report:?}");
    assert_eq!(report.undelivered.0.name(), "quiet");
    assert_eq!(
        report.undelivered.1,
        <greetings::Unheard as cohort::Message>::TAG
    );
    println!("first datagram received: {}", report.datagram_received);
}
