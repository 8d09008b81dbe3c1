using System.Buffers;
using Google.Protobuf;
using Grpc.Core;

namespace SiteLink.Internal;

/// <summary>
/// One message of the multiplexed data RPC (Tunnel/Mux): the frames of sitelink.v1.StreamFrames, in order. A writer
/// puts every frame waiting at the moment into one message, so many small frames of many connections cost one gRPC
/// message, one HTTP/2 DATA frame and one TLS record instead of one each; a frame of full size travels alone.
/// </summary>
internal sealed class MuxBatch
{
    private const byte FrameTag = (1 << 3) | 2;

    public MuxBatch(List<DataFrame> frames) => Frames = frames;

    public List<DataFrame> Frames { get; }

    /// <summary>Encoded size of one frame inside a batch (its tag and length included).</summary>
    public static int SizeInBatch(DataFrame frame)
    {
        var size = DataFrame.Size(frame);
        return 1 + CodedOutputStream.ComputeLengthSize(size) + size;
    }

    public static Marshaller<MuxBatch> Marshaller { get; } = new(Serialize, Deserialize);

    /// <summary>The multiplexed data RPC of protocol version 2, sitelink.v1.Tunnel/Mux.</summary>
    public static Method<MuxBatch, MuxBatch> MuxMethod { get; } =
        new(MethodType.DuplexStreaming, WireNames.ServiceName, "Mux", Marshaller, Marshaller);

    /// <summary>Parses one serialized batch (the marshaller's decoder, for tests and fuzzing).</summary>
    internal static MuxBatch Parse(ReadOnlySequence<byte> payload) => Deserialize(payload);

    /// <summary>Serializes one batch into a new array (tests and fuzzing).</summary>
    internal static byte[] ToArray(MuxBatch batch)
    {
        var buffer = new ArrayBufferWriter<byte>();
        Write(batch, buffer);
        return buffer.WrittenSpan.ToArray();
    }

    private static void Serialize(MuxBatch batch, SerializationContext context)
    {
        var size = 0;
        foreach (var frame in batch.Frames)
        {
            size += SizeInBatch(frame);
        }

        context.SetPayloadLength(size);
        Write(batch, context.GetBufferWriter());
        context.Complete();
    }

    private static void Write(MuxBatch batch, IBufferWriter<byte> writer)
    {
        foreach (var frame in batch.Frames)
        {
            DataFrame.WriteHeader(writer, FrameTag, DataFrame.Size(frame));
            DataFrame.Write(frame, writer);
        }
    }

    private static MuxBatch Deserialize(DeserializationContext context) => Deserialize(context.PayloadAsReadOnlySequence());

    private static MuxBatch Deserialize(ReadOnlySequence<byte> payload)
    {
        var reader = new SequenceReader<byte>(payload);
        var frames = new List<DataFrame>();
        try
        {
            while (!reader.End)
            {
                // A tag is a uint32 on the wire: higher bits are dropped, as protobuf's parser does.
                var tag = (uint)DataFrame.ReadVarint(ref reader);
                var field = tag >> 3;
                var wireType = (int)(tag & 7);
                if (field == 0)
                {
                    throw DataFrame.Malformed("a field number is 0");
                }

                if (field == 1 && wireType == 2)
                {
                    var length = DataFrame.ReadLength(ref reader);
                    frames.Add(DataFrame.Deserialize(payload.Slice(reader.Position, length)));
                    reader.Advance(length);
                }
                else
                {
                    DataFrame.SkipField(ref reader, field, wireType);
                }
            }
        }
        catch
        {
            foreach (var frame in frames)
            {
                frame.Release();
            }

            throw;
        }

        return new MuxBatch(frames);
    }
}
