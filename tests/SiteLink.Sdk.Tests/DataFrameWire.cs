using System.Buffers;
using Grpc.Core;
using SiteLink.Internal;

namespace SiteLink.Sdk.Tests;

/// <summary>Runs frames through the data RPC's real marshaller, as gRPC would, with configurable segmentation.</summary>
internal static class DataFrameWire
{
    public static byte[] Serialize(DataFrame frame)
    {
        var context = new SegmentedSerializationContext(segmentSize: 4096);
        DataFrame.Marshaller.ContextualSerializer(frame, context);
        return context.Payload;
    }

    public static DataFrame Deserialize(byte[] payload) =>
        DataFrame.Marshaller.ContextualDeserializer(new SegmentedDeserializationContext(payload, segmentSize: 4096));

    internal sealed class SegmentedSerializationContext(int segmentSize) : SerializationContext, IBufferWriter<byte>
    {
        private readonly ArrayBufferWriter<byte> _written = new();
        private byte[] _current = [];

        public int DeclaredLength { get; private set; } = -1;

        public byte[] Payload => _written.WrittenSpan.ToArray();

        public override void SetPayloadLength(int payloadLength) => DeclaredLength = payloadLength;

        public override IBufferWriter<byte> GetBufferWriter() => this;

        public override void Complete()
        {
        }

        public override void Complete(byte[] payload) => _written.Write(payload);

        public void Advance(int count) => _written.Write(_current.AsSpan(0, count));

        public Memory<byte> GetMemory(int sizeHint = 0) => _current = new byte[Math.Max(sizeHint, segmentSize)];

        public Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;
    }

    internal sealed class SegmentedDeserializationContext(byte[] payload, int segmentSize) : DeserializationContext
    {
        public override int PayloadLength => payload.Length;

        public override byte[] PayloadAsNewBuffer() => (byte[])payload.Clone();

        public override ReadOnlySequence<byte> PayloadAsReadOnlySequence()
        {
            if (payload.Length == 0)
            {
                return ReadOnlySequence<byte>.Empty;
            }

            Segment? first = null, last = null;
            for (var offset = 0; offset < payload.Length; offset += segmentSize)
            {
                var segment = new Segment(payload.AsMemory(offset, Math.Min(segmentSize, payload.Length - offset)), last);
                first ??= segment;
                last = segment;
            }

            return new ReadOnlySequence<byte>(first!, 0, last!, last!.Memory.Length);
        }

        private sealed class Segment : ReadOnlySequenceSegment<byte>
        {
            public Segment(ReadOnlyMemory<byte> memory, Segment? previous)
            {
                Memory = memory;
                if (previous is not null)
                {
                    RunningIndex = previous.RunningIndex + previous.Memory.Length;
                    previous.Next = this;
                }
            }
        }
    }
}
