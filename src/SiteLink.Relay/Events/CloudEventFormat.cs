using System.Buffers;
using System.Buffers.Text;
using System.Collections;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using SiteLink.Internal;

namespace SiteLink.Relay.Events;

/// <summary>
/// An event as the relay published it: its CloudEvents id and the JSON body every subscription receives (the same bytes
/// for all of them, and for every attempt). Kept in <see cref="EventHub.Recent"/> and in subscription queues.
/// </summary>
public sealed class PublishedEvent
{
    internal PublishedEvent(string id, string type, string tenant, string subject, DateTimeOffset time, byte[] body)
    {
        Id = id;
        Type = type;
        Tenant = tenant;
        Subject = subject;
        Time = time;
        Body = body;
    }

    /// <summary>The CloudEvents <c>id</c>, unique per event (<c>evt_…</c>); the <c>SiteLink-Event-Id</c> header.</summary>
    public string Id { get; }

    /// <summary>The event type, e.g. <c>session.connected</c>.</summary>
    public string Type { get; }

    /// <summary>The tenant it concerns (lower case).</summary>
    public string Tenant { get; }

    /// <summary>What it is about (a session id, an endpoint name, a token name).</summary>
    public string Subject { get; }

    /// <summary>When it happened.</summary>
    public DateTimeOffset Time { get; }

    /// <summary>The CloudEvents structured-mode JSON, as delivered.</summary>
    public string Json => Encoding.UTF8.GetString(Body);

    /// <summary>The JSON's UTF-8 bytes.</summary>
    internal byte[] Body { get; }
}

/// <summary>
/// CloudEvents 1.0 structured JSON for <see cref="RelayEvent"/>s and the <c>SiteLink-Signature</c> over it
/// (docs/operations.md, "Events and webhooks"). Written with <see cref="Utf8JsonWriter"/>: a fixed member order and no
/// reflection, and every value bounded, so one event's body is at most <see cref="MaxEventBytes"/>.
/// </summary>
internal static class CloudEventFormat
{
    public const string ContentType = "application/cloudevents+json; charset=utf-8";

    /// <summary>The largest body; an event whose data would make it larger keeps only its tenant and <c>"truncated": true</c>.</summary>
    public const int MaxEventBytes = 16 * 1024;

    /// <summary>Strings in an event's data are cut to this many characters (and cleaned of control characters).</summary>
    public const int MaxStringLength = SafeText.MaxMessageLength;

    /// <summary>Entries of one object or list in an event's data; more are left out.</summary>
    public const int MaxEntries = 32;

    private const int MaxDepth = 4;

    public static PublishedEvent Create(RelayEvent relayEvent, string relayId)
    {
        var id = NewId();
        var tenant = SafeText.Clean(relayEvent.Tenant, SafeText.MaxIdLength).ToLowerInvariant();
        var subject = SafeText.Clean(relayEvent.Subject, MaxStringLength);
        var type = SafeText.Clean(relayEvent.Type, SafeText.MaxIdLength);
        var body = Write(relayEvent, id, type, tenant, subject, relayId, details: true);
        if (body.Length > MaxEventBytes)
        {
            body = Write(relayEvent, id, type, tenant, subject, relayId, details: false);
        }

        return new PublishedEvent(id, type, tenant, subject, relayEvent.Time, body);
    }

    /// <summary>The CloudEvents <c>source</c> of a relay's events.</summary>
    public static string Source(string relayId) => "sitelink://relay/" + Uri.EscapeDataString(relayId);

    /// <summary>An RFC 3339 time in UTC with the fraction .NET keeps, e.g. <c>2026-11-27T17:09:55.1234567Z</c>.</summary>
    public static string Rfc3339(DateTimeOffset time) => time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", CultureInfo.InvariantCulture);

    /// <summary>
    /// The <c>SiteLink-Signature</c> header: <c>t=&lt;unix seconds&gt;,v1=&lt;lowercase hex HMAC-SHA256(secret, "&lt;t&gt;.&lt;body&gt;")&gt;</c>.
    /// </summary>
    public static string Sign(string secret, long unixSeconds, ReadOnlySpan<byte> body)
    {
        var timestamp = unixSeconds.ToString(CultureInfo.InvariantCulture);
        var signed = new byte[timestamp.Length + 1 + body.Length];
        Encoding.ASCII.GetBytes(timestamp, signed);
        signed[timestamp.Length] = (byte)'.';
        body.CopyTo(signed.AsSpan(timestamp.Length + 1));
        var mac = HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), signed);
        return $"t={timestamp},v1={Convert.ToHexStringLower(mac)}";
    }

    private static byte[] Write(RelayEvent relayEvent, string id, string type, string tenant, string subject, string relayId, bool details)
    {
        var buffer = new ArrayBufferWriter<byte>(512);
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("specversion", "1.0");
            json.WriteString("id", id);
            json.WriteString("source", Source(relayId));
            json.WriteString("type", type);
            json.WriteString("subject", subject);
            json.WriteString("time", Rfc3339(relayEvent.Time));
            json.WriteString("datacontenttype", "application/json");
            json.WriteString("tenant", tenant);
            json.WritePropertyName("data");
            // The tenant first: the data's own "tenant", if any, is left out as a repeated name.
            KeyValuePair<string, object?>[] tenantEntry = [new("tenant", tenant)];
            WriteObject(json, details ? tenantEntry.Concat(relayEvent.Data ?? EmptyData) : [.. tenantEntry, new("truncated", true)], 0);
            json.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    private static readonly Dictionary<string, object?> EmptyData = [];

    /// <summary>Writes a value of an event's data: primitives as JSON, maps as objects, sequences as arrays, anything else as its text; all bounded.</summary>
    private static void WriteValue(Utf8JsonWriter json, object? value, int depth)
    {
        switch (value)
        {
            case null:
                json.WriteNullValue();
                break;
            case string text:
                json.WriteStringValue(SafeText.Clean(text, MaxStringLength));
                break;
            case bool flag:
                json.WriteBooleanValue(flag);
                break;
            case int or long or short or byte or sbyte or ushort or uint:
                json.WriteNumberValue(Convert.ToInt64(value, CultureInfo.InvariantCulture));
                break;
            case ulong large:
                json.WriteNumberValue(large);
                break;
            case decimal number:
                json.WriteNumberValue(number);
                break;
            case double or float:
                var real = Convert.ToDouble(value, CultureInfo.InvariantCulture);
                if (double.IsFinite(real))
                {
                    json.WriteNumberValue(real);
                }
                else
                {
                    json.WriteStringValue(real.ToString(CultureInfo.InvariantCulture));
                }

                break;
            case TimeSpan span:
                json.WriteNumberValue(span.TotalSeconds);
                break;
            case DateTimeOffset time:
                json.WriteStringValue(Rfc3339(time));
                break;
            case DateTime time:
                json.WriteStringValue(Rfc3339(new DateTimeOffset(time.Kind == DateTimeKind.Unspecified ? DateTime.SpecifyKind(time, DateTimeKind.Utc) : time)));
                break;
            case Enum named:
                json.WriteStringValue(named.ToString());
                break;
            case IEnumerable when depth >= MaxDepth:
                json.WriteStringValue("…");
                break;
            case IEnumerable<KeyValuePair<string, string>> map:
                WriteObject(json, map.Select(static e => new KeyValuePair<string, object?>(e.Key, e.Value)), depth);
                break;
            case IEnumerable<KeyValuePair<string, object?>> map:
                WriteObject(json, map, depth);
                break;
            case IEnumerable sequence:
                json.WriteStartArray();
                var count = 0;
                foreach (var item in sequence)
                {
                    if (count++ == MaxEntries)
                    {
                        break;
                    }

                    WriteValue(json, item, depth + 1);
                }

                json.WriteEndArray();
                break;
            default:
                json.WriteStringValue(SafeText.Clean(Convert.ToString(value, CultureInfo.InvariantCulture), MaxStringLength));
                break;
        }
    }

    private static void WriteObject(Utf8JsonWriter json, IEnumerable<KeyValuePair<string, object?>> entries, int depth)
    {
        json.WriteStartObject();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (key, value) in entries)
        {
            var name = SafeText.Clean(key, SafeText.MaxIdLength);
            if (!seen.Add(name))
            {
                continue;
            }

            if (seen.Count > MaxEntries)
            {
                break;
            }

            json.WritePropertyName(name);
            WriteValue(json, value, depth + 1);
        }

        json.WriteEndObject();
    }

    private static string NewId()
    {
        Span<byte> bytes = stackalloc byte[15];
        RandomNumberGenerator.Fill(bytes);
        return "evt_" + Base64Url.EncodeToString(bytes);
    }
}
