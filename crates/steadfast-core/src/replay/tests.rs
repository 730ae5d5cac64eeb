use std::convert::Infallible;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, Full, StreamBody};
use proptest::prelude::*;

use super::*;

type Chunks = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn streamed(chunks: &[Vec<u8>]) -> Chunks {
    let frames: Vec<_> = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from(c.clone()))))
        .collect();
    StreamBody::new(stream::iter(frames))
}

async fn collect<B>(body: B) -> Result<Bytes, B::Error>
where
    B: Body,
{
    Ok(body.collect().await?.to_bytes())
}

#[tokio::test]
async fn buffered_bodies_clone_for_free() {
    let req = Request::post("/x")
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    let again = try_clone_request(&req).unwrap();
    assert_eq!(collect(again.into_body()).await.unwrap(), "abc");
}

/// A source that knows its end (a `Full` after its frame, an empty body)
/// ends every copy with its last frame: hyper then closes the request with
/// that frame instead of sending an empty one after it.
#[tokio::test]
async fn a_source_that_knows_its_end_ends_the_copies_with_its_last_frame() {
    let mut first = ReplayBody::new(Full::new(Bytes::from_static(b"abc")), 1024);
    assert!(!first.is_end_stream());
    let copy = first.try_clone_body().unwrap();
    let frame = first.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "abc");
    assert!(first.is_end_stream());
    assert_eq!(first.size_hint().exact(), Some(0));
    // The copy still has its frame to replay, and then its end.
    let mut copy = copy;
    assert!(!copy.is_end_stream());
    assert_eq!(copy.size_hint().exact(), Some(3));
    assert_eq!(
        copy.frame().await.unwrap().unwrap().into_data().unwrap(),
        "abc"
    );
    assert!(copy.is_end_stream());

    let empty = ReplayBody::new(Full::new(Bytes::new()), 1024);
    assert!(empty.is_end_stream());
    assert!(empty.try_clone_body().unwrap().is_end_stream());
    assert_eq!(collect(empty).await.unwrap(), "");
}

#[tokio::test]
async fn trailers_are_replayed() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-sum", "42".parse().unwrap());
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"ab"))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = ReplayBody::new(StreamBody::new(stream::iter(frames)), 16);
    let copy = body.try_clone_body().unwrap();
    let first = body.collect().await.unwrap();
    assert_eq!(first.trailers().unwrap()["x-sum"], "42");
    let second = copy.collect().await.unwrap();
    assert_eq!(second.trailers().unwrap()["x-sum"], "42");
    assert_eq!(second.to_bytes(), "ab");
}

#[tokio::test]
async fn a_copy_made_mid_stream_picks_up_where_the_first_stopped() {
    let body = ReplayBody::new(
        streamed(&[b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]),
        1024,
    );
    let mut first = body;
    // The first attempt sends one frame, then is cancelled.
    let f = first.frame().await.unwrap().unwrap();
    assert_eq!(f.into_data().unwrap(), "one");
    let copy = first.try_clone_body().unwrap();
    drop(first);
    assert_eq!(collect(copy).await.unwrap(), "onetwothree");
}

#[tokio::test]
async fn over_the_cap_the_sender_continues_and_copies_are_refused() {
    let body = ReplayBody::new(streamed(&[vec![1; 10], vec![2; 10]]), 15);
    let early = body.try_clone_body().unwrap();
    assert_eq!(
        collect(body.try_clone_body().unwrap()).await.unwrap().len(),
        20
    );
    assert!(!body.is_replayable());
    assert_eq!(
        body.try_clone_body().unwrap_err(),
        NotReplayable::TooLarge { cap: 15 }
    );
    // A copy made before the overflow that fell behind gets a typed error, not wrong bytes.
    let err = collect(early).await.unwrap_err();
    assert!(
        matches!(
            err,
            ReplayError::NotReplayable(NotReplayable::TooLarge { cap: 15 })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("15-byte replay buffer"));
}

#[tokio::test]
async fn a_failed_source_is_not_replayable() {
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(b"a"))),
        Err(std::io::Error::other("disk")),
    ];
    let body = ReplayBody::new(StreamBody::new(stream::iter(frames)), 16);
    let copy = body.try_clone_body().unwrap();
    assert!(matches!(collect(body).await, Err(ReplayError::Body(_))));
    assert!(matches!(
        collect(copy).await,
        Err(ReplayError::NotReplayable(NotReplayable::SourceFailed))
    ));
}

#[tokio::test]
async fn concurrent_copies_both_see_every_byte() {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let src = StreamBody::new(tokio_stream_from(rx));
    let a = ReplayBody::new(src, 1024);
    let b = a.try_clone_body().unwrap();
    let ta = tokio::spawn(collect(a));
    let tb = tokio::spawn(collect(b));
    for chunk in ["x", "y", "z"] {
        tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.unwrap();
        tokio::task::yield_now().await;
    }
    drop(tx);
    assert_eq!(ta.await.unwrap().unwrap(), "xyz");
    assert_eq!(tb.await.unwrap().unwrap(), "xyz");
}

#[tokio::test]
async fn trailers_survive_a_copy_that_stopped_after_them() {
    // hyper's h2 body pipe stops polling once it has sent trailers.
    let mut trailers = HeaderMap::new();
    trailers.insert("x-sum", "42".parse().unwrap());
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"ab"))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut first = ReplayBody::new(StreamBody::new(stream::iter(frames)), 16);
    assert!(first.frame().await.unwrap().unwrap().is_data());
    assert!(first.frame().await.unwrap().unwrap().is_trailers());
    let copy = first.try_clone_body().unwrap();
    drop(first);
    let replayed = copy.collect().await.unwrap();
    assert_eq!(replayed.trailers().unwrap()["x-sum"], "42");
    assert_eq!(replayed.to_bytes(), "ab");
}

#[tokio::test]
async fn a_stalled_copy_does_not_block_the_others() {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let mut stalled = ReplayBody::new(StreamBody::new(tokio_stream_from(rx)), 1024);
    let copy = stalled.try_clone_body().unwrap();
    // The first copy polls once (the source is empty), then is never polled again.
    assert!(futures_util::FutureExt::now_or_never(stalled.frame()).is_none());
    let reader = tokio::spawn(collect(copy));
    tx.send(Ok(Frame::data(Bytes::from_static(b"late"))))
        .await
        .unwrap();
    drop(tx);
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
    assert_eq!(
        got.expect("the second copy was left without a wake-up")
            .unwrap()
            .unwrap(),
        "late"
    );
    drop(stalled);
}

#[tokio::test]
async fn repeated_polls_do_not_pile_up_wakers() {
    let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let mut body = ReplayBody::new(StreamBody::new(tokio_stream_from(rx)), 16);
    for _ in 0..1000 {
        assert!(futures_util::FutureExt::now_or_never(body.frame()).is_none());
    }
    let waiting = lock(&body.shared).waiting.wakers.lock().unwrap().len();
    assert_eq!(waiting, 1);
}

fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    stream::poll_fn(move |cx| rx.poll_recv(cx))
}

proptest! {
    /// Every copy yields exactly the bytes that were sent, however the body
    /// was chunked and whenever the copies were made, as long as the total
    /// fits the cap; past the cap copies are refused.
    #[test]
    fn replays_exactly_what_was_sent(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16),
        cap in 0usize..512,
        clone_after in 0usize..20,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let expected: Vec<u8> = chunks.concat();
            let mut body = ReplayBody::new(streamed(&chunks), cap);
            let mut sent = Vec::new();
            for _ in 0..clone_after {
                match body.frame().await {
                    Some(Ok(f)) => sent.extend_from_slice(&f.into_data().unwrap()),
                    _ => break,
                }
            }
            let copy = body.try_clone_body();
            if sent.len() > cap {
                prop_assert_eq!(copy.unwrap_err(), NotReplayable::TooLarge { cap });
            } else {
                let copy = copy.unwrap();
                let rest = collect(body).await.unwrap();
                sent.extend_from_slice(&rest);
                prop_assert_eq!(&sent, &expected);
                match collect(copy).await {
                    Ok(replayed) => {
                        prop_assert!(expected.len() <= cap || replayed.len() == expected.len());
                        prop_assert_eq!(replayed.as_ref(), &expected[..]);
                    }
                    Err(e) => {
                        prop_assert!(expected.len() > cap, "unexpected error {}", e);
                    }
                }
            }
            Ok(())
        })?;
    }
}
