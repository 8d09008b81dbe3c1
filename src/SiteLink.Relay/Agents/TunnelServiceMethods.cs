using Google.Protobuf;
using Grpc.AspNetCore.Server.Model;
using Grpc.Core;
using SiteLink.Internal;
using SiteLink.Protocol.V1;

namespace SiteLink.Relay.Agents;

/// <summary>
/// Binds sitelink.v1.Tunnel to <see cref="TunnelService"/>: Control with protobuf messages, Stream (the data path) with
/// <see cref="DataFrame"/>'s pooled marshaller, which is the StreamFrame wire format without a copy per message.
/// </summary>
internal sealed class TunnelServiceMethods : IServiceMethodProvider<TunnelService>
{
    /// <summary>
    /// What the Control marshaller yields for bytes that are not an AgentMessage, so the service can answer with a
    /// clear status instead of gRPC failing the call as an internal error. Compared by reference; never sent anywhere.
    /// </summary>
    internal static readonly AgentMessage MalformedControlMessage = new();

    internal static readonly Method<AgentMessage, RelayMessage> ControlMethod = new(
        MethodType.DuplexStreaming,
        WireNames.ServiceName,
        "Control",
        new Marshaller<AgentMessage>(
            (message, context) => Serialize(message, context),
            context =>
            {
                try
                {
                    return AgentMessage.Parser.ParseFrom(context.PayloadAsReadOnlySequence());
                }
                catch (InvalidProtocolBufferException)
                {
                    return MalformedControlMessage;
                }
            }),
        ProtobufMarshaller(RelayMessage.Parser));

    public void OnServiceMethodDiscovery(ServiceMethodProviderContext<TunnelService> context)
    {
        context.AddDuplexStreamingMethod(ControlMethod, [], (service, requests, responses, call) => service.Control(requests, responses, call));
        context.AddDuplexStreamingMethod(DataFrame.StreamMethod, [], (service, requests, responses, call) => service.Stream(requests, responses, call));
        context.AddDuplexStreamingMethod(MuxBatch.MuxMethod, [], (service, requests, responses, call) => service.Mux(requests, responses, call));
    }

    private static Marshaller<T> ProtobufMarshaller<T>(MessageParser<T> parser)
        where T : IMessage<T> =>
        new(Serialize, context => parser.ParseFrom(context.PayloadAsReadOnlySequence()));

    private static void Serialize<T>(T message, SerializationContext context)
        where T : IMessage<T>
    {
        context.SetPayloadLength(message.CalculateSize());
        message.WriteTo(context.GetBufferWriter());
        context.Complete();
    }
}
