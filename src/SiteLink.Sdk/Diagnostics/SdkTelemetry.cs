using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using SiteLink.Protocol;

namespace SiteLink.Diagnostics;

/// <summary>
/// The SDK's metrics (meter <c>SiteLink.Sdk</c>) and traces (activity source <c>SiteLink.Sdk</c>). Instruments are
/// created once per meter: a process-wide one, or one per <see cref="IMeterFactory"/> (the host's, under DI).
/// </summary>
internal sealed class SdkTelemetry
{
    public const string Name = "SiteLink.Sdk";
    public const string EndpointTag = "sitelink.endpoint";
    public const string OutcomeTag = "sitelink.outcome";
    public const string StateTag = "sitelink.session.state";
    public const string DirectionTag = "network.io.direction";
    public const string ErrorTypeTag = "error.type";

    public static readonly ActivitySource ActivitySource = new(Name, ProtocolConstants.SdkVersion);

    private static readonly SdkTelemetry Shared = new(new Meter(Name, ProtocolConstants.SdkVersion));
    private static readonly ConditionalWeakTable<IMeterFactory, SdkTelemetry> PerFactory = [];

    private readonly ConcurrentDictionary<TunnelSession, byte> _sessions = new();

    private SdkTelemetry(Meter meter)
    {
        Meter = meter;
        ActiveConnections = meter.CreateUpDownCounter<long>("sitelink.connection.active", "{connection}", "Tunnelled connections being served.");
        Connections = meter.CreateCounter<long>("sitelink.connections", "{connection}", "Tunnelled connections the relay offered, by endpoint and outcome (completed, aborted, refused).");
        Duration = meter.CreateHistogram<double>("sitelink.connection.duration", "s", "How long tunnelled connections lasted.");
        Bytes = meter.CreateCounter<long>("sitelink.io", "By", "Bytes carried through tunnelled connections; network.io.direction receive = from the public client.");
        HeartbeatRoundTrip = meter.CreateHistogram<double>("sitelink.heartbeat.rtt", "s", "Round-trip time of answered heartbeats.");
        Reconnects = meter.CreateCounter<long>("sitelink.session.reconnects", "{reconnect}", "Successful reconnections after a lost connection.");
        ConnectFailures = meter.CreateCounter<long>("sitelink.session.connect_failures", "{attempt}", "Failed attempts to connect to the relay, by error.type.");
        meter.CreateObservableUpDownCounter("sitelink.session.state", ObserveStates, "{session}", "Sessions per state (sitelink.session.state).");
    }

    public Meter Meter { get; }

    public UpDownCounter<long> ActiveConnections { get; }

    public Counter<long> Connections { get; }

    public Histogram<double> Duration { get; }

    public Counter<long> Bytes { get; }

    public Histogram<double> HeartbeatRoundTrip { get; }

    public Counter<long> Reconnects { get; }

    public Counter<long> ConnectFailures { get; }

    public static SdkTelemetry For(IMeterFactory? factory) =>
        factory is null ? Shared : PerFactory.GetValue(factory, static f => new SdkTelemetry(f.Create(new MeterOptions(Name) { Version = ProtocolConstants.SdkVersion })));

    public void Register(TunnelSession session) => _sessions.TryAdd(session, 0);

    public void Unregister(TunnelSession session) => _sessions.TryRemove(session, out _);

    private IEnumerable<Measurement<long>> ObserveStates()
    {
        var counts = new long[Enum.GetValues<TunnelSessionState>().Length];
        foreach (var session in _sessions.Keys)
        {
            counts[(int)session.State]++;
        }

        for (var i = 0; i < counts.Length; i++)
        {
            yield return new Measurement<long>(counts[i], new KeyValuePair<string, object?>(StateTag, ((TunnelSessionState)i).ToString().ToLowerInvariant()));
        }
    }

    public void OnRefused(string endpointName, string reason)
    {
        if (Connections.Enabled)
        {
            Connections.Add(1, new(EndpointTag, endpointName), new(OutcomeTag, "refused"), new(ErrorTypeTag, reason));
        }
    }
}

/// <summary>One tunnelled connection's metrics and activity, from offer to release.</summary>
internal sealed class ConnectionTelemetry
{
    private readonly SdkTelemetry _telemetry;
    private readonly string _endpoint;
    private readonly long _started;
    private readonly TimeProvider _time;
    private readonly Activity? _activity;
    private readonly KeyValuePair<string, object?> _endpointTag;
    private readonly Action<string, TimeSpan>? _onEnded;
    private int _ended;

    public ConnectionTelemetry(SdkTelemetry telemetry, TimeProvider time, TunnelConnectionInfo info, Action<string, TimeSpan>? onEnded = null)
    {
        _onEnded = onEnded;
        _telemetry = telemetry;
        _time = time;
        _endpoint = info.EndpointName;
        _endpointTag = new(SdkTelemetry.EndpointTag, info.EndpointName);
        _started = time.GetTimestamp();
        _activity = SdkTelemetry.ActivitySource.StartActivity("sitelink.connection", ActivityKind.Server);
        if (_activity is not null)
        {
            _activity.SetTag(SdkTelemetry.EndpointTag, info.EndpointName);
            if (info.ClientAddress is System.Net.IPEndPoint client)
            {
                _activity.SetTag("client.address", client.Address.ToString());
                _activity.SetTag("client.port", client.Port);
            }

            _activity.SetTag("sitelink.stream_id", info.StreamId);
            _activity.SetTag("network.transport", "tcp");
        }

        _telemetry.ActiveConnections.Add(1, _endpointTag);
    }

    public void OnReceived(int count)
    {
        if (_telemetry.Bytes.Enabled)
        {
            _telemetry.Bytes.Add(count, _endpointTag, new(SdkTelemetry.DirectionTag, "receive"));
        }
    }

    public void OnSent(int count)
    {
        if (_telemetry.Bytes.Enabled)
        {
            _telemetry.Bytes.Add(count, _endpointTag, new(SdkTelemetry.DirectionTag, "transmit"));
        }
    }

    /// <summary>The connection ended; only the first call counts.</summary>
    public void End(string outcome)
    {
        if (Interlocked.Exchange(ref _ended, 1) != 0)
        {
            return;
        }

        var outcomeTag = new KeyValuePair<string, object?>(SdkTelemetry.OutcomeTag, outcome);
        var duration = _time.GetElapsedTime(_started);
        try
        {
            // Metric and activity listeners are the application's code (exporters): one that throws here must not
            // keep the connection's places in the limits, which _onEnded gives back.
            _telemetry.ActiveConnections.Add(-1, _endpointTag);
            _telemetry.Connections.Add(1, _endpointTag, outcomeTag);
            _telemetry.Duration.Record(duration.TotalSeconds, _endpointTag, outcomeTag);
            if (_activity is not null)
            {
                _activity.SetTag(SdkTelemetry.OutcomeTag, outcome);
                if (outcome != "completed")
                {
                    _activity.SetStatus(ActivityStatusCode.Error, outcome);
                }

                _activity.Dispose();
            }
        }
        finally
        {
            _onEnded?.Invoke(outcome, duration);
        }
    }

    public override string ToString() => _endpoint;
}
