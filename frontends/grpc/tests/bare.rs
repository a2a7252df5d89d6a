//! The engine-free baseline server answers `simple` like the real one.

mod common;

use nereid_grpc::bare::serve_bare;
use nereid_grpc::client::GrpcClient;

#[tokio::test]
async fn bare_server_answers_simple() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_bare(listener, async {
        let _ = stopped.await;
    }));
    let client = GrpcClient::connect(format!("http://{addr}")).await.unwrap();
    assert!(client.server_ready().await.unwrap());
    assert!(client.model_ready("simple", None).await.unwrap());
    let resp = client.infer(common::simple_request(2)).await.unwrap();
    let sum = resp.output("OUTPUT0").unwrap().to_vec::<i32>().unwrap();
    let diff = resp.output("OUTPUT1").unwrap().to_vec::<i32>().unwrap();
    assert_eq!(sum[..16], (1..17).collect::<Vec<i32>>()[..]);
    assert_eq!(diff[16..], (-1..15).collect::<Vec<i32>>()[..]);
    let mut other = common::simple_request(1);
    other.model_name = "identity_fp32".into();
    assert!(client.infer(other).await.is_err());
    drop(client);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
