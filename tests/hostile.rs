//! Hostile and broken input over real TCP: raw protobuf bytes the generated
//! client would never send. Each gets a precise answer, what was
//! acknowledged before stays stored, and other clients are still served.

mod common;

use article_archive::proto::{self, IngestOutcome};
use bytes::{Buf, BufMut};
use common::*;
use prost::Message;
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    Code, Status,
};

/// Sends pre-encoded request messages as they are; decodes responses.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct ResponseDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = proto::IngestArticlesResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        proto::IngestArticlesResponse::decode(bytes)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = proto::IngestArticlesResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

/// Streams raw request messages through IngestArticles and collects the
/// acknowledgements and the final status (None when the stream ended OK).
async fn ingest_raw(
    server: &TestServer,
    messages: Vec<Vec<u8>>,
) -> (Vec<proto::IngestArticlesResponse>, Option<Status>) {
    let mut grpc = tonic::client::Grpc::new(channel(server.addr).await);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/archive.v1.ArchiveService/IngestArticles",
    );
    let response = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(messages)),
            path,
            RawCodec,
        )
        .await;
    let mut stream = match response {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), Some(status)),
    };
    let mut acks = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(ack)) => acks.push(ack),
            Ok(None) => return (acks, None),
            Err(status) => return (acks, Some(status)),
        }
    }
}

fn good(i: usize) -> Vec<u8> {
    request(article(&format!("ok{i:03}"), i as i64)).encode_to_vec()
}

/// Field 1 (article) holding `article_bytes`.
fn wrap(article_bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(article_bytes.len() as u64, &mut out);
    out.extend_from_slice(article_bytes);
    out
}

/// After 100 good articles, a message whose title is not UTF-8: the 100 are
/// acknowledged and stored, the stream ends with INTERNAL (gRPC's code for a
/// message that does not parse), and the server serves others.
#[tokio::test]
async fn a_malformed_message_after_100_good_ones_keeps_the_100() {
    let mut server = TestServer::start().await;
    let mut messages: Vec<Vec<u8>> = (0..100).map(good).collect();
    let mut bad_article = article("bad", 1);
    bad_article.title = "PLACEHOLDER".into();
    let mut bytes = bad_article.encode_to_vec();
    let at = bytes.windows(11).position(|w| w == b"PLACEHOLDER").unwrap();
    bytes[at..at + 3].copy_from_slice(&[0xFF, 0xFE, 0xC0]);
    messages.push(wrap(&bytes));
    messages.push(good(100));

    let (acks, status) = ingest_raw(&server, messages).await;
    assert_eq!(acks.len(), 100);
    assert!(acks
        .iter()
        .enumerate()
        .all(|(i, a)| a.index == i as u64 && a.outcome == IngestOutcome::Created as i32));
    let status = status.expect("the stream ends with an error");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status.message().contains("UTF-8")
            || status.message().contains("utf-8")
            || status.message().contains("string"),
        "{}",
        status.message()
    );
    for i in 0..100 {
        server
            .client
            .get_article(proto::GetArticleRequest {
                revision: 0,
                id: format!("ok{i:03}"),
            })
            .await
            .unwrap();
    }
    assert_eq!(server.store.check().unwrap().records, 100);
    ingest(&mut server.client, vec![article("after", 1)]).await;
}

/// An article with a million authors is REJECTED naming the rule, and the
/// stream goes on.
#[tokio::test]
async fn a_million_authors_is_rejected_and_the_stream_goes_on() {
    let server = TestServer::start().await;
    let crowd = proto::Article {
        authors: vec!["a".into(); 1_000_000],
        ..article("crowd", 1)
    };
    let (acks, status) = ingest_raw(&server, vec![request(crowd).encode_to_vec(), good(1)]).await;
    assert!(status.is_none(), "{status:?}");
    assert_eq!(acks[0].outcome, IngestOutcome::Rejected as i32);
    assert!(
        acks[0]
            .error
            .starts_with("authors: must have at most 256 entries"),
        "{}",
        acks[0].error
    );
    assert_eq!(acks[1].outcome, IngestOutcome::Created as i32);
}

/// Unknown fields are skipped, however many; unknown groups nested deeper
/// than the decoder allows end the stream with INTERNAL instead of
/// exhausting the server's stack.
#[tokio::test]
async fn unknown_fields_are_skipped_and_deep_nesting_is_refused() {
    let mut server = TestServer::start().await;
    let mut many = article("many-unknown", 1).encode_to_vec();
    for i in 0..100_000u64 {
        prost::encoding::encode_key(
            1000 + (i % 500) as u32,
            prost::encoding::WireType::Varint,
            &mut many,
        );
        prost::encoding::encode_varint(i, &mut many);
    }
    let mut deep = article("deep", 1).encode_to_vec();
    for _ in 0..10_000 {
        prost::encoding::encode_key(99, prost::encoding::WireType::StartGroup, &mut deep);
    }
    for _ in 0..10_000 {
        prost::encoding::encode_key(99, prost::encoding::WireType::EndGroup, &mut deep);
    }
    let (acks, status) = ingest_raw(&server, vec![wrap(&many), wrap(&deep)]).await;
    assert_eq!(acks.len(), 1);
    assert_eq!(
        acks[0].outcome,
        IngestOutcome::Created as i32,
        "{:?}",
        acks[0]
    );
    let status = status.expect("deep nesting ends the stream");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status.message().contains("recursion"),
        "{}",
        status.message()
    );
    server
        .client
        .get_article(proto::GetArticleRequest {
            revision: 0,
            id: "many-unknown".into(),
        })
        .await
        .unwrap();
}
