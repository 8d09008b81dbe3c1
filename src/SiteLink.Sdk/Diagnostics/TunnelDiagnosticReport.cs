using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace SiteLink;

/// <summary>
/// What <see cref="TunnelDiagnostics.RunAsync(TunnelSessionOptions, CancellationToken)"/> found: for each relay, every step on the way to it (DNS, TCP, the proxy,
/// TLS, HTTP/2, the authtoken, a heartbeat), how each went and what to do about a failure. <see cref="ToString"/> is the
/// text for a person; <see cref="ToJson"/> the same for a vendor's support.
/// </summary>
/// <remarks>Immutable. It holds no secret: never the authtoken, nor a proxy's credentials.</remarks>
public sealed class TunnelDiagnosticReport
{
    internal TunnelDiagnosticReport(string sdkVersion, DateTimeOffset startedAt, TimeSpan duration, IReadOnlyList<TunnelRelayDiagnosis> relays)
    {
        SdkVersion = sdkVersion;
        StartedAt = startedAt;
        Duration = duration;
        Relays = relays;
    }

    /// <summary>The version of the SiteLink SDK that ran the diagnosis (what the agent reports to the relay).</summary>
    public string SdkVersion { get; }

    /// <summary>When the diagnosis started, from the options' <see cref="TunnelSessionOptions.TimeProvider"/> (UTC).</summary>
    public DateTimeOffset StartedAt { get; }

    /// <summary>How long the whole diagnosis took.</summary>
    public TimeSpan Duration { get; }

    /// <summary>One section per relay, in the order the options name them (<see cref="TunnelSessionOptions.RelayUrl"/> first).</summary>
    public IReadOnlyList<TunnelRelayDiagnosis> Relays { get; }

    /// <summary>Whether every relay's steps succeeded (no step failed).</summary>
    public bool Succeeded => FailedStep is null;

    /// <summary>The first step that failed, relays in order; <see langword="null"/> when none did.</summary>
    public TunnelDiagnosticStep? FailedStep => Relays.Select(r => r.FailedStep).FirstOrDefault(s => s is not null);

    /// <summary>
    /// The report for a person: a header (agent version, time), then for each relay its proxy and one line per step
    /// (<c>PASS</c>, <c>FAIL</c>, <c>WARN</c>, <c>SKIP</c>, the duration, the detail) with advice under a failure or a
    /// warning, and the result.
    /// </summary>
    public override string ToString()
    {
        var text = new StringBuilder();
        text.Append("SiteLink connectivity diagnosis (SDK ").Append(SdkVersion).Append(", ")
            .Append(StartedAt.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture)).Append(" UTC, took ")
            .Append(TunnelDiagnosticStep.FormatDuration(Duration)).AppendLine(")");
        foreach (var relay in Relays)
        {
            text.AppendLine();
            text.Append("Relay: ").AppendLine(relay.RelayUrl.ToString());
            text.Append("Proxy: ").AppendLine(relay.ProxyAddress is null ? "none (direct connection)" : $"{relay.ProxyAddress} (from {relay.ProxySource})");
            var width = relay.Steps.Max(s => s.Name.Length);
            foreach (var step in relay.Steps)
            {
                var duration = step.Verdict == TunnelDiagnosticVerdict.Skipped ? "" : TunnelDiagnosticStep.FormatDuration(step.Duration);
                text.Append("  ").Append(TunnelDiagnosticStep.VerdictLabel(step.Verdict)).Append("  ").Append(step.Name.PadRight(width))
                    .Append("  ").Append(duration.PadLeft(8)).Append("  ").AppendLine(step.Detail);
                if (step.Advice is { } advice)
                {
                    text.Append("        ").Append(new string(' ', width + 12)).Append("what to do: ").AppendLine(advice);
                }
            }

            text.AppendLine(relay.FailedStep is { } failed
                ? $"Result: FAILED at {failed.Name} ({failed.Error})."
                : relay.Steps.Any(s => s.Verdict == TunnelDiagnosticVerdict.Warning) ? "Result: the agent can connect, with warnings." : "Result: the agent can connect.");
        }

        return text.ToString();
    }

    /// <summary>
    /// The report as indented JSON (camelCase names; durations in milliseconds; times in ISO 8601 UTC; enums as their
    /// names), written with <see cref="Utf8JsonWriter"/> so it needs no reflection (trimming and native AOT safe).
    /// </summary>
    public string ToJson()
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions
        {
            Indented = true,
            // Read by people too: apostrophes and accents as they are. Every value is text for a JSON file, never HTML;
            // control characters are still escaped (and text from the network holds none).
            Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        }))
        {
            json.WriteStartObject();
            json.WriteString("sdkVersion", SdkVersion);
            json.WriteString("startedAt", StartedAt.UtcDateTime);
            json.WriteNumber("durationMs", Milliseconds(Duration));
            json.WriteBoolean("succeeded", Succeeded);
            json.WriteStartArray("relays");
            foreach (var relay in Relays)
            {
                json.WriteStartObject();
                json.WriteString("relayUrl", relay.RelayUrl.ToString());
                if (relay.ProxyAddress is null)
                {
                    json.WriteNull("proxy");
                }
                else
                {
                    json.WriteStartObject("proxy");
                    json.WriteString("address", relay.ProxyAddress.ToString());
                    json.WriteString("source", relay.ProxySource);
                    json.WriteEndObject();
                }

                json.WriteNumber("durationMs", Milliseconds(relay.Duration));
                json.WriteBoolean("succeeded", relay.Succeeded);
                json.WriteStartArray("steps");
                foreach (var step in relay.Steps)
                {
                    json.WriteStartObject();
                    json.WriteString("step", step.Kind.ToString());
                    json.WriteString("name", step.Name);
                    json.WriteString("verdict", step.Verdict.ToString());
                    json.WriteNumber("durationMs", Milliseconds(step.Duration));
                    json.WriteString("detail", step.Detail);
                    json.WriteString("advice", step.Advice);
                    json.WriteString("error", step.Error?.ToString());
                    json.WriteEndObject();
                }

                json.WriteEndArray();
                json.WriteEndObject();
            }

            json.WriteEndArray();
            json.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    private static double Milliseconds(TimeSpan duration) => Math.Round(duration.TotalMilliseconds, 1);
}
