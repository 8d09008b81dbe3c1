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
    internal static readonly Method<AgentMessage, RelayMessage> ControlMethod = new(
        MethodType.DuplexStreaming, WireNames.ServiceName, "Control", ProtobufMarshaller(AgentMessage.Parser), ProtobufMarshaller(RelayMessage.Parser));

    public void OnServiceMethodDiscovery(ServiceMethodProviderContext<TunnelService> context)
    {
        context.AddDuplexStreamingMethod(ControlMethod, [], (service, requests, responses, call) => service.Control(requests, responses, call));
        context.AddDuplexStreamingMethod(DataFrame.StreamMethod, [], (service, requests, responses, call) => service.Stream(requests, responses, call));
    }

    private static Marshaller<T> ProtobufMarshaller<T>(MessageParser<T> parser)
        where T : IMessage<T> =>
        new(
            (message, context) =>
            {
                context.SetPayloadLength(message.CalculateSize());
                message.WriteTo(context.GetBufferWriter());
                context.Complete();
            },
            context => parser.ParseFrom(context.PayloadAsReadOnlySequence()));
}
