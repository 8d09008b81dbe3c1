using Grpc.Core;
using Grpc.Net.Client;
using SiteLink.Protocol.V1;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// Speaks the wire protocol directly, without the SDK, to act as a buggy or hostile agent: forged stream ids,
/// oversized frames, malformed control messages.
/// </summary>
internal sealed class RawAgent : IDisposable
{
    private readonly GrpcChannel _channel;

    public RawAgent(TestRelay relay, string token = TestRelay.AcmeToken)
    {
        Token = token;
        var pin = Convert.FromHexString(relay.Server.CertificateSha256!);
        var handler = new SocketsHttpHandler
        {
            SslOptions =
            {
                RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                    certificate is not null && System.Security.Cryptography.SHA256.HashData(certificate.GetRawCertData()).AsSpan().SequenceEqual(pin),
            },
        };
        _channel = GrpcChannel.ForAddress(relay.Server.AgentUrl, new GrpcChannelOptions { HttpHandler = handler, DisposeHttpClient = true });
        Client = new Tunnel.TunnelClient(_channel);
    }

    public string Token { get; }

    public Tunnel.TunnelClient Client { get; }

    public Metadata Headers(string? token = null) => [new("authorization", "Bearer " + (token ?? Token))];

    public AsyncDuplexStreamingCall<AgentMessage, RelayMessage> OpenControl() => Client.Control(Headers());

    /// <summary>Opens a control stream, says Hello and returns the call with the Welcome read.</summary>
    public async Task<(AsyncDuplexStreamingCall<AgentMessage, RelayMessage> Call, Welcome Welcome)> HandshakeAsync()
    {
        var call = OpenControl();
        await call.RequestStream.WriteAsync(new AgentMessage { Hello = new Hello { ProtocolVersion = 1, ClientId = "raw", SdkVersion = "raw" } }).DefaultTimeout();
        var welcome = await NextAsync(call, RelayMessage.KindOneofCase.Welcome);
        return (call, welcome.Welcome);
    }

    /// <summary>Reads control messages until one of <paramref name="kind"/> arrives.</summary>
    public static async Task<RelayMessage> NextAsync(AsyncDuplexStreamingCall<AgentMessage, RelayMessage> call, RelayMessage.KindOneofCase kind)
    {
        while (await call.ResponseStream.MoveNext().DefaultTimeout())
        {
            if (call.ResponseStream.Current.KindCase == kind)
            {
                return call.ResponseStream.Current;
            }
        }

        throw new InvalidOperationException($"The control stream ended before {kind}.");
    }

    public static async Task<BindResult> BindAsync(AsyncDuplexStreamingCall<AgentMessage, RelayMessage> call, string name, string bindId = "b1")
    {
        await call.RequestStream.WriteAsync(new AgentMessage { Bind = new Bind { BindId = bindId, Name = name, Kind = EndpointKind.Tcp } }).DefaultTimeout();
        return (await NextAsync(call, RelayMessage.KindOneofCase.BindResult)).BindResult;
    }

    public AsyncDuplexStreamingCall<StreamFrame, StreamFrame> OpenStream(string sessionId, string streamId, string? token = null)
    {
        var headers = Headers(token);
        headers.Add("sitelink-session-id", sessionId);
        headers.Add("sitelink-stream-id", streamId);
        return Client.Stream(headers);
    }

    /// <summary>A data stream parked at the relay for <paramref name="sessionId"/>, waiting to be paired.</summary>
    public AsyncDuplexStreamingCall<StreamFrame, StreamFrame> OpenParked(string sessionId)
    {
        var headers = Headers();
        headers.Add("sitelink-session-id", sessionId);
        headers.Add("sitelink-parked", "1");
        return Client.Stream(headers);
    }

    /// <summary>The control RPC with the message bytes as they are, to send what no well-behaved agent would.</summary>
    public AsyncDuplexStreamingCall<byte[], byte[]> OpenRawControl()
    {
        var bytes = Marshallers.Create(b => b, b => b);
        var method = new Method<byte[], byte[]>(MethodType.DuplexStreaming, Tunnel.Descriptor.FullName, "Control", bytes, bytes);
        return _channel.CreateCallInvoker().AsyncDuplexStreamingCall(method, null, new CallOptions(Headers()));
    }

    /// <summary>The data RPC with the message bytes as they are, to send what no well-behaved agent would.</summary>
    public AsyncDuplexStreamingCall<byte[], byte[]> OpenRawStream(string sessionId, string streamId)
    {
        var headers = Headers();
        headers.Add("sitelink-session-id", sessionId);
        headers.Add("sitelink-stream-id", streamId);
        var bytes = Marshallers.Create(b => b, b => b);
        var method = new Method<byte[], byte[]>(MethodType.DuplexStreaming, Tunnel.Descriptor.FullName, "Stream", bytes, bytes);
        return _channel.CreateCallInvoker().AsyncDuplexStreamingCall(method, null, new CallOptions(headers));
    }

    public void Dispose() => _channel.Dispose();
}
