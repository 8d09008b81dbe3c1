using System.Diagnostics.Tracing;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// Counts gRPC calls started and stopped, on the client (the SDK) and on the server (the relay), from grpc-dotnet's
/// own event sources, so tests can prove no call is leaked. Create it before the calls it should count.
/// </summary>
internal sealed class GrpcCallCounter : EventListener
{
    private const string ClientSource = "Grpc.Net.Client";
    private const string ServerSource = "Grpc.AspNetCore.Server";
    private long _clientCalls;
    private long _serverCalls;

    /// <summary>Client calls started and not yet stopped since this counter was created.</summary>
    public long OpenClientCalls => Interlocked.Read(ref _clientCalls);

    /// <summary>Server calls started and not yet stopped since this counter was created.</summary>
    public long OpenServerCalls => Interlocked.Read(ref _serverCalls);

    protected override void OnEventSourceCreated(EventSource eventSource)
    {
        if (eventSource.Name is ClientSource or ServerSource)
        {
            EnableEvents(eventSource, EventLevel.Verbose);
        }
    }

    protected override void OnEventWritten(EventWrittenEventArgs eventData)
    {
        var delta = eventData.EventId switch
        {
            1 => 1, // CallStart
            2 => -1, // CallStop
            _ => 0,
        };
        if (delta == 0)
        {
            return;
        }

        if (eventData.EventSource.Name == ClientSource)
        {
            Interlocked.Add(ref _clientCalls, delta);
        }
        else if (eventData.EventSource.Name == ServerSource)
        {
            Interlocked.Add(ref _serverCalls, delta);
        }
    }
}
