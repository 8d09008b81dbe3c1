using System.Buffers.Binary;
using System.Text;

namespace SiteLink.Relay.CloudEndpoints;

/// <summary>What reading a TLS ClientHello from the first bytes of a connection gave.</summary>
internal enum ClientHelloStatus
{
    /// <summary>The ClientHello is complete; the server name (if it named one) is known.</summary>
    Complete,

    /// <summary>Not all of it has arrived yet.</summary>
    NeedMore,

    /// <summary>Not a TLS ClientHello, malformed, or larger than the relay reads.</summary>
    Invalid,
}

/// <summary>
/// Reads the server name (SNI) from the TLS ClientHello at the start of a connection, without terminating TLS, so a
/// tls cloud endpoint can route the connection and pass its bytes through untouched. Hand-written by necessity (no
/// library parses a ClientHello it does not answer): it reads only what it needs, checks every length against the
/// bytes that are there, never allocates more than the name, and gives up past <see cref="MaxBytes"/>.
/// </summary>
internal static class ClientHello
{
    /// <summary>The most bytes read before routing: a ClientHello spread over TLS records of up to 16 KiB in all.</summary>
    public const int MaxBytes = 16 * 1024;

    private const byte HandshakeRecord = 22;
    private const byte ClientHelloMessage = 1;
    private const ushort ServerNameExtension = 0;
    private const byte HostNameType = 0;

    /// <summary>
    /// Reads <paramref name="data"/> (the connection's first bytes). On <see cref="ClientHelloStatus.Complete"/>,
    /// <paramref name="serverName"/> is the lower-case host name the client asked for, or null when it sent none;
    /// on <see cref="ClientHelloStatus.Invalid"/>, <paramref name="problem"/> says why.
    /// </summary>
    public static ClientHelloStatus TryReadServerName(ReadOnlySpan<byte> data, out string? serverName, out string? problem)
    {
        serverName = null;
        problem = null;

        // The handshake message may span several records: gather their payloads (up to MaxBytes) first.
        byte[]? gathered = null;
        var offset = 0;
        var messageLength = -1;
        var collected = 0;
        while (true)
        {
            if (data.Length - offset < 5)
            {
                return Fail(data.Length > MaxBytes, "the ClientHello is larger than the relay reads", out problem) ?? ClientHelloStatus.NeedMore;
            }

            if (data[offset] != HandshakeRecord)
            {
                problem = offset == 0 ? "not a TLS handshake" : "a record other than a handshake inside the ClientHello";
                return ClientHelloStatus.Invalid;
            }

            if (data[offset + 1] != 3)
            {
                problem = "not a TLS record version";
                return ClientHelloStatus.Invalid;
            }

            var recordLength = BinaryPrimitives.ReadUInt16BigEndian(data[(offset + 3)..]);
            if (recordLength == 0 || recordLength > 16384 + 2048)
            {
                problem = "a TLS record of an impossible length";
                return ClientHelloStatus.Invalid;
            }

            if (data.Length - offset - 5 < recordLength)
            {
                // Judge what has arrived of the first record already: a message that is not a ClientHello, or one
                // announcing more than the relay reads, is refused now rather than waited for.
                var partial = data[(offset + 5)..];
                if (offset == 0 && partial.Length >= 4 && (problem = CheckMessageHeader(partial, out _)) is not null)
                {
                    return ClientHelloStatus.Invalid;
                }

                return Fail(offset + 5 + recordLength > MaxBytes + 5, "the ClientHello is larger than the relay reads", out problem) ?? ClientHelloStatus.NeedMore;
            }

            var payload = data.Slice(offset + 5, recordLength);
            offset += 5 + recordLength;
            if (messageLength < 0 && collected == 0 && payload.Length >= 4)
            {
                if ((problem = CheckMessageHeader(payload, out messageLength)) is not null)
                {
                    return ClientHelloStatus.Invalid;
                }

                if (payload.Length - 4 >= messageLength)
                {
                    // The usual case: one record holds it all.
                    return ReadBody(payload.Slice(4, messageLength), out serverName, out problem);
                }
            }

            gathered ??= new byte[MaxBytes + 4];
            if (collected + payload.Length > gathered.Length)
            {
                problem = "the ClientHello is larger than the relay reads";
                return ClientHelloStatus.Invalid;
            }

            payload.CopyTo(gathered.AsSpan(collected));
            collected += payload.Length;
            if (messageLength < 0 && collected >= 4 && (problem = CheckMessageHeader(gathered, out messageLength)) is not null)
            {
                return ClientHelloStatus.Invalid;
            }

            if (messageLength >= 0 && collected - 4 >= messageLength)
            {
                return ReadBody(gathered.AsSpan(4, messageLength), out serverName, out problem);
            }
        }
    }

    /// <summary>
    /// Checks a handshake message header (type, 24-bit length): why it is refused, or null with its
    /// <paramref name="length"/>.
    /// </summary>
    private static string? CheckMessageHeader(ReadOnlySpan<byte> header, out int length)
    {
        length = (header[1] << 16) | (header[2] << 8) | header[3];
        return header[0] != ClientHelloMessage ? "the first handshake message is not a ClientHello"
            : length > MaxBytes ? "the ClientHello is larger than the relay reads"
            : null;
    }

    private static ClientHelloStatus? Fail(bool condition, string why, out string? problem)
    {
        problem = condition ? why : null;
        return condition ? ClientHelloStatus.Invalid : null;
    }

    private static ClientHelloStatus ReadBody(ReadOnlySpan<byte> body, out string? serverName, out string? problem)
    {
        serverName = null;
        problem = "a malformed ClientHello";
        var reader = new SpanReader(body);
        // legacy_version (2), random (32), session id, cipher suites, compression methods.
        if (!reader.Skip(2 + 32) || !reader.SkipVector(1, 32) || !reader.SkipVector(2, 65534) || !reader.SkipVector(1, 255))
        {
            return ClientHelloStatus.Invalid;
        }

        if (reader.Remaining == 0)
        {
            // No extensions at all: a valid (old) ClientHello that names no server.
            problem = null;
            return ClientHelloStatus.Complete;
        }

        if (!reader.TryReadUInt16(out var extensionsLength) || extensionsLength != reader.Remaining)
        {
            return ClientHelloStatus.Invalid;
        }

        while (reader.Remaining > 0)
        {
            if (!reader.TryReadUInt16(out var type) || !reader.TryReadUInt16(out var length) || !reader.TrySlice(length, out var extension))
            {
                return ClientHelloStatus.Invalid;
            }

            if (type != ServerNameExtension)
            {
                continue;
            }

            var names = new SpanReader(extension);
            if (!names.TryReadUInt16(out var listLength) || listLength != names.Remaining)
            {
                return ClientHelloStatus.Invalid;
            }

            while (names.Remaining > 0)
            {
                if (!names.TryReadByte(out var nameType) || !names.TryReadUInt16(out var nameLength) || !names.TrySlice(nameLength, out var name))
                {
                    return ClientHelloStatus.Invalid;
                }

                if (nameType != HostNameType || serverName is not null)
                {
                    continue;
                }

                if (name.Length is 0 or > 253 || !IsHostName(name))
                {
                    problem = "a server name that is not a host name";
                    return ClientHelloStatus.Invalid;
                }

                serverName = Encoding.ASCII.GetString(name).ToLowerInvariant();
            }
        }

        problem = null;
        return ClientHelloStatus.Complete;
    }

    private static bool IsHostName(ReadOnlySpan<byte> name)
    {
        foreach (var b in name)
        {
            if (!(b is (>= (byte)'a' and <= (byte)'z') or (>= (byte)'A' and <= (byte)'Z') or (>= (byte)'0' and <= (byte)'9') or (byte)'-' or (byte)'.' or (byte)'_'))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Big-endian reads over a span, each checked against what is left.</summary>
    private ref struct SpanReader(ReadOnlySpan<byte> data)
    {
        private ReadOnlySpan<byte> _rest = data;

        public readonly int Remaining => _rest.Length;

        public bool Skip(int count)
        {
            if (_rest.Length < count)
            {
                return false;
            }

            _rest = _rest[count..];
            return true;
        }

        public bool TryReadByte(out byte value)
        {
            value = 0;
            if (_rest.Length < 1)
            {
                return false;
            }

            value = _rest[0];
            _rest = _rest[1..];
            return true;
        }

        public bool TryReadUInt16(out ushort value)
        {
            value = 0;
            if (_rest.Length < 2)
            {
                return false;
            }

            value = BinaryPrimitives.ReadUInt16BigEndian(_rest);
            _rest = _rest[2..];
            return true;
        }

        public bool TrySlice(int count, out ReadOnlySpan<byte> slice)
        {
            slice = default;
            if (_rest.Length < count)
            {
                return false;
            }

            slice = _rest[..count];
            _rest = _rest[count..];
            return true;
        }

        /// <summary>Skips a vector whose length prefix is <paramref name="prefix"/> bytes, at most <paramref name="max"/> long.</summary>
        public bool SkipVector(int prefix, int max)
        {
            int length;
            if (prefix == 1)
            {
                if (!TryReadByte(out var b))
                {
                    return false;
                }

                length = b;
            }
            else
            {
                if (!TryReadUInt16(out var u))
                {
                    return false;
                }

                length = u;
            }

            return length <= max && Skip(length);
        }
    }
}
