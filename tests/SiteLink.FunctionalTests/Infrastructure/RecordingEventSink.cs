using System.Collections.Concurrent;
using SiteLink.Relay.Events;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>Keeps every event a relay publishes, for tests (add it with <c>TestRelay.StartAsync(services: ...)</c>).</summary>
internal sealed class RecordingEventSink : IRelayEventSink
{
    private readonly ConcurrentQueue<RelayEvent> _events = new();

    public IReadOnlyCollection<RelayEvent> Events => _events;

    public IEnumerable<RelayEvent> OfType(string type) => _events.Where(e => e.Type == type);

    public void Publish(RelayEvent relayEvent) => _events.Enqueue(relayEvent);
}
