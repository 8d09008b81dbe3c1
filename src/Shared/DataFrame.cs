using System.Buffers;
using Google.Protobuf;
using Grpc.Core;
using SiteLink.Protocol.V1;

namespace SiteLink.Internal;

/// <summary>
/// One message of the data RPC (Tunnel/Stream), byte-for-byte the wire format of sitelink.v1.StreamFrame, without
/// protobuf's per-message copy into a fresh array: received data lands in a buffer rented from the shared pool, which
/// the reader hands back with <see cref="Release"/> once the bytes are on their way; sent data is the caller's memory,
/// copied once, straight into the transport's buffer.
/// </summary>
internal sealed class DataFrame
{
    private byte[]? _rented;

    /// <summary>Bytes of the tunnelled connection (field 1).</summary>
    public ReadOnlyMemory<byte> Data { get; private set; }

    /// <summary>The sender closed its sending direction (field 2).</summary>
    public bool HalfClose { get; set; }

    /// <summary>The connection a parked stream now carries (field 3; relay to agent, first frame only), or on the Mux call the connection this frame opens.</summary>
    public OpenStream? Open { get; set; }

    /// <summary>Mux call only: the connection the frame is about (field 4).</summary>
    public ulong ConnectionId { get; set; }

    /// <summary>Mux call only: the sender is finished with the connection (field 5).</summary>
    public bool Close { get; set; }

    /// <summary>Mux call only: the connection is aborted, with this status (field 6).</summary>
    public StreamReset? Reset { get; set; }

    /// <summary>Mux call only: credit, in bytes, the sender grants its peer on the connection (field 7).</summary>
    public uint Window { get; set; }

    /// <summary>A frame carrying <paramref name="data"/>; the memory must stay untouched until the write completed.</summary>
    public static DataFrame ForData(ReadOnlyMemory<byte> data) => new() { Data = data };

    /// <summary>Makes <see cref="Data"/> a copy of <paramref name="data"/> this frame owns (in-memory transports).</summary>
    public DataFrame WithOwnedCopy(ReadOnlySpan<byte> data)
    {
        Data = data.ToArray();
        return this;
    }

    /// <summary>
    /// Returns the received data's buffer to the pool, cleared where data was (the same rule as
    /// <see cref="SocketIo.Return"/>: another connection, maybe another tenant's, rents it next). <see cref="Data"/> is
    /// empty afterwards; only the reader calls it.
    /// </summary>
    public void Release()
    {
        var rented = _rented;
        if (rented is not null)
        {
            var length = Data.Length;
            _rented = null;
            Data = default;
            rented.AsSpan(0, length).Clear();
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private void SetData(ref SequenceReader<byte> reader, int length)
    {
        // A repeated field 1 replaces the earlier one, as protobuf's parser does.
        Release();
        if (length == 0)
        {
            return;
        }

        var rented = ArrayPool<byte>.Shared.Rent(length);
        reader.TryCopyTo(rented.AsSpan(0, length));
        reader.Advance(length);
        _rented = rented;
        Data = rented.AsMemory(0, length);
    }

    /// <summary>The marshaller of the data RPC, for both directions.</summary>
    public static Marshaller<DataFrame> Marshaller { get; } = new(Serialize, Deserialize);

    /// <summary>The data RPC, sitelink.v1.Tunnel/Stream, with <see cref="Marshaller"/> for both directions.</summary>
    public static Method<DataFrame, DataFrame> StreamMethod { get; } =
        new(MethodType.DuplexStreaming, WireNames.ServiceName, "Stream", Marshaller, Marshaller);


    /// <summary>Parses one serialized frame (the marshaller's decoder, for tests and fuzzing).</summary>
    internal static DataFrame Parse(ReadOnlySequence<byte> payload) => Deserialize(payload);

    /// <summary>Serializes one frame into a new array (tests and fuzzing).</summary>
    internal static byte[] ToArray(DataFrame frame)
    {
        var buffer = new ArrayBufferWriter<byte>();
        Write(frame, buffer);
        return buffer.WrittenSpan.ToArray();
    }

    private const byte DataTag = (1 << 3) | 2;
    private const byte HalfCloseTag = (2 << 3) | 0;
    private const byte OpenTag = (3 << 3) | 2;
    private const byte ConnectionIdTag = (4 << 3) | 0;
    private const byte CloseTag = (5 << 3) | 0;
    private const byte ResetTag = (6 << 3) | 2;
    private const byte WindowTag = (7 << 3) | 0;

    private static void Serialize(DataFrame frame, SerializationContext context)
    {
        context.SetPayloadLength(Size(frame));
        Write(frame, context.GetBufferWriter());
        context.Complete();
    }

    internal static int Size(DataFrame frame)
    {
        var size = 0;
        var length = frame.Data.Length;
        if (frame.ConnectionId != 0)
        {
            size += 1 + CodedOutputStream.ComputeUInt64Size(frame.ConnectionId);
        }

        if (length > 0)
        {
            size += 1 + CodedOutputStream.ComputeLengthSize(length) + length;
        }

        if (frame.HalfClose)
        {
            size += 2;
        }

        if (frame.Open is { } open)
        {
            size += 1 + CodedOutputStream.ComputeMessageSize(open);
        }

        if (frame.Close)
        {
            size += 2;
        }

        if (frame.Reset is { } reset)
        {
            size += 1 + CodedOutputStream.ComputeMessageSize(reset);
        }

        if (frame.Window != 0)
        {
            size += 1 + CodedOutputStream.ComputeUInt32Size(frame.Window);
        }

        return size;
    }

    internal static void Write(DataFrame frame, IBufferWriter<byte> writer)
    {
        var data = frame.Data.Span;
        if (!data.IsEmpty)
        {
            WriteHeader(writer, DataTag, data.Length);
            while (!data.IsEmpty)
            {
                var span = writer.GetSpan();
                var n = Math.Min(span.Length, data.Length);
                data[..n].CopyTo(span);
                writer.Advance(n);
                data = data[n..];
            }
        }

        if (frame.HalfClose)
        {
            WriteBool(writer, HalfCloseTag);
        }

        if (frame.Open is { } open)
        {
            WriteHeader(writer, OpenTag, open.CalculateSize());
            open.WriteTo(writer);
        }

        if (frame.ConnectionId != 0)
        {
            WriteVarint(writer, ConnectionIdTag, frame.ConnectionId);
        }

        if (frame.Close)
        {
            WriteBool(writer, CloseTag);
        }

        if (frame.Reset is { } reset)
        {
            WriteHeader(writer, ResetTag, reset.CalculateSize());
            reset.WriteTo(writer);
        }

        if (frame.Window != 0)
        {
            WriteVarint(writer, WindowTag, frame.Window);
        }
    }

    private static void WriteBool(IBufferWriter<byte> writer, byte tag)
    {
        var span = writer.GetSpan(2);
        span[0] = tag;
        span[1] = 1;
        writer.Advance(2);
    }

    private static void WriteVarint(IBufferWriter<byte> writer, byte tag, ulong value)
    {
        var span = writer.GetSpan(11);
        span[0] = tag;
        var n = 1;
        while (value >= 0x80)
        {
            span[n++] = (byte)(value | 0x80);
            value >>= 7;
        }

        span[n++] = (byte)value;
        writer.Advance(n);
    }

    internal static void WriteHeader(IBufferWriter<byte> writer, byte tag, int length)
    {
        var span = writer.GetSpan(6);
        span[0] = tag;
        var n = 1;
        var value = (uint)length;
        while (value >= 0x80)
        {
            span[n++] = (byte)(value | 0x80);
            value >>= 7;
        }

        span[n++] = (byte)value;
        writer.Advance(n);
    }

    private static DataFrame Deserialize(DeserializationContext context) => Deserialize(context.PayloadAsReadOnlySequence());

    internal static DataFrame Deserialize(ReadOnlySequence<byte> payload)
    {
        var reader = new SequenceReader<byte>(payload);
        var frame = new DataFrame();
        try
        {
            while (!reader.End)
            {
                // A tag is a uint32 on the wire: higher bits are dropped, as protobuf's parser does.
                var tag = (uint)ReadVarint(ref reader);
                var field = tag >> 3;
                var wireType = (int)(tag & 7);
                if (field == 0)
                {
                    throw Malformed("a field number is 0");
                }

                switch ((field, wireType))
                {
                    case (1, 2):
                        frame.SetData(ref reader, ReadLength(ref reader));
                        break;
                    case (2, 0):
                        frame.HalfClose = ReadVarint(ref reader) != 0;
                        break;
                    case (3, 2):
                        var length = ReadLength(ref reader);
                        // Repeated occurrences of a message field merge, parsed in place as protobuf's parser does.
                        frame.Open ??= new OpenStream();
                        frame.Open.MergeFrom(payload.Slice(reader.Position, length));
                        reader.Advance(length);
                        break;
                    case (4, 0):
                        frame.ConnectionId = ReadVarint(ref reader);
                        break;
                    case (5, 0):
                        frame.Close = ReadVarint(ref reader) != 0;
                        break;
                    case (6, 2):
                        var resetLength = ReadLength(ref reader);
                        frame.Reset ??= new StreamReset();
                        frame.Reset.MergeFrom(payload.Slice(reader.Position, resetLength));
                        reader.Advance(resetLength);
                        break;
                    case (7, 0):
                        // uint32 on the wire: a larger varint is truncated to its low 32 bits, as protobuf does.
                        frame.Window = unchecked((uint)ReadVarint(ref reader));
                        break;
                    default:
                        SkipField(ref reader, field, wireType);
                        break;
                }
            }
        }
        catch
        {
            frame.Release();
            throw;
        }

        return frame;
    }

    internal static ulong ReadVarint(ref SequenceReader<byte> reader)
    {
        ulong value = 0;
        for (var shift = 0; shift < 64; shift += 7)
        {
            if (!reader.TryRead(out var b))
            {
                throw Malformed("a varint runs past the end of the message");
            }

            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return value;
            }
        }

        throw Malformed("a varint is longer than 10 bytes");
    }

    internal static int ReadLength(ref SequenceReader<byte> reader)
    {
        var length = ReadVarint(ref reader);
        if (length > (ulong)reader.Remaining)
        {
            throw Malformed("a length-delimited field runs past the end of the message");
        }

        return (int)length;
    }

    internal static void SkipField(ref SequenceReader<byte> reader, ulong field, int wireType)
    {
        // Fields of later protocol versions are skipped, as protobuf does.
        switch (wireType)
        {
            case 0:
                ReadVarint(ref reader);
                break;
            case 1:
                Skip(ref reader, 8);
                break;
            case 2:
                reader.Advance(ReadLength(ref reader));
                break;
            case 5:
                Skip(ref reader, 4);
                break;
            default:
                throw Malformed($"field {field} has the unsupported wire type {wireType}");
        }
    }

    private static void Skip(ref SequenceReader<byte> reader, int count)
    {
        if (reader.Remaining < count)
        {
            throw Malformed("a fixed-size field runs past the end of the message");
        }

        reader.Advance(count);
    }

    // An IOException, as protobuf's own parse errors are: readers treat it as the connection failing.
    internal static IOException Malformed(string reason) =>
        new($"Malformed sitelink.v1.StreamFrame: {reason}.");
}
