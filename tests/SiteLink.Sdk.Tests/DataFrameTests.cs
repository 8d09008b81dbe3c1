using System.Buffers;
using System.Security.Cryptography;
using Google.Protobuf;
using Grpc.Core;
using SiteLink.Internal;
using SiteLink.Protocol.V1;

namespace SiteLink.Sdk.Tests;

/// <summary>
/// The data RPC's marshaller must be the sitelink.v1.StreamFrame wire format exactly: every frame it writes parses with
/// protobuf's generated parser to the same values, and every frame protobuf writes reads back the same, whatever the
/// transport's buffer segmentation.
/// </summary>
[TestFixture]
public sealed class DataFrameTests
{
    private static readonly int[] Sizes = [0, 1, 127, 128, 16_383, 16_384, 65_536, 300_000];

    [TestCaseSource(nameof(Sizes))]
    public void Serialize_ParsesAsStreamFrame_WithSmallWriterSegments(int size)
    {
        var data = RandomNumberGenerator.GetBytes(size);
        var open = new OpenStream { StreamId = "s1", BindId = "b1", EndpointName = "db", ClientAddress = "203.0.113.7:5000" };
        var frame = DataFrame.ForData(data);
        frame.HalfClose = true;
        frame.Open = open;

        var context = new DataFrameWire.SegmentedSerializationContext(segmentSize: 1000);
        DataFrame.Marshaller.ContextualSerializer(frame, context);
        var parsed = StreamFrame.Parser.ParseFrom(context.Payload);

        Assert.Multiple(() =>
        {
            Assert.That(context.DeclaredLength, Is.EqualTo(context.Payload.Length), "SetPayloadLength must match what is written");
            Assert.That(parsed.Data.ToByteArray(), Is.EqualTo(data));
            Assert.That(parsed.HalfClose, Is.True);
            Assert.That(parsed.Open, Is.EqualTo(open));
            Assert.That(context.Payload, Is.EqualTo(new StreamFrame { Data = ByteString.CopyFrom(data), HalfClose = true, Open = open }.ToByteArray()),
                "byte-for-byte what protobuf writes");
        });
    }

    [TestCaseSource(nameof(Sizes))]
    public void Deserialize_ReadsWhatProtobufWrote_AcrossManySegments(int size)
    {
        var data = RandomNumberGenerator.GetBytes(size);
        var bytes = new StreamFrame { Data = ByteString.CopyFrom(data), HalfClose = size % 2 == 0 }.ToByteArray();

        var frame = DataFrame.Marshaller.ContextualDeserializer(new DataFrameWire.SegmentedDeserializationContext(bytes, segmentSize: 7));

        Assert.Multiple(() =>
        {
            Assert.That(frame.Data.ToArray(), Is.EqualTo(data));
            Assert.That(frame.HalfClose, Is.EqualTo(size % 2 == 0));
            Assert.That(frame.Open, Is.Null);
        });
        frame.Release();
        Assert.That(frame.Data.IsEmpty, Is.True, "released frames expose no memory");
    }

    [Test]
    [Category("Lifecycle")]
    public void Release_ClearsTheDataBeforeThePoolHandsTheBufferToAnotherConnection()
    {
        var data = RandomNumberGenerator.GetBytes(10_000);
        var bytes = new StreamFrame { Data = ByteString.CopyFrom(data) }.ToByteArray();
        var frame = DataFrame.Marshaller.ContextualDeserializer(new DataFrameWire.SegmentedDeserializationContext(bytes, segmentSize: 4096));
        Assert.That(System.Runtime.InteropServices.MemoryMarshal.TryGetArray(frame.Data, out var segment), Is.True);

        frame.Release();

        Assert.That(segment.AsSpan().ToArray(), Has.All.EqualTo((byte)0), "one tenant's bytes never reach another's connection through the pool");
    }

    [Test]
    public void Deserialize_SkipsFieldsOfLaterVersions()
    {
        // data=1 "abc", then unknown fields of every skippable wire type, then half_close=2.
        using var stream = new MemoryStream();
        var output = new CodedOutputStream(stream);
        output.WriteTag(1, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFromUtf8("abc"));
        output.WriteTag(20, WireFormat.WireType.Varint);
        output.WriteUInt64(ulong.MaxValue);
        output.WriteTag(21, WireFormat.WireType.Fixed64);
        output.WriteFixed64(42);
        output.WriteTag(22, WireFormat.WireType.LengthDelimited);
        output.WriteString("later");
        output.WriteTag(23, WireFormat.WireType.Fixed32);
        output.WriteFixed32(7);
        output.WriteTag(2, WireFormat.WireType.Varint);
        output.WriteBool(true);
        output.Flush();

        var frame = DataFrameWire.Deserialize(stream.ToArray());

        Assert.Multiple(() =>
        {
            Assert.That(frame.Data.ToArray(), Is.EqualTo("abc"u8.ToArray()));
            Assert.That(frame.HalfClose, Is.True);
        });
    }

    [TestCase(new byte[] { 0x0A, 0x05, 1, 2 }, "runs past the end")]
    [TestCase(new byte[] { 0x0A, 0xFF }, "varint runs past the end")]
    [TestCase(new byte[] { 0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01 }, "longer than 10 bytes")]
    [TestCase(new byte[] { 0x00, 0x01 }, "field number is 0")]
    [TestCase(new byte[] { 0x0B, 0x0C }, "unsupported wire type 3")]
    [TestCase(new byte[] { 0x4D, 1, 2 }, "fixed-size field runs past the end")]
    public void Deserialize_MalformedFrame_ThrowsExplainedError(byte[] bytes, string reason)
    {
        var ex = Assert.Throws<IOException>(() => DataFrameWire.Deserialize(bytes));
        Assert.That(ex!.Message, Does.Contain("StreamFrame").And.Contain(reason));
    }

    [Test]
    public void Release_IsIdempotent_AndLeavesSentFramesAlone()
    {
        var caller = new byte[] { 1, 2, 3 };
        var sent = DataFrame.ForData(caller);
        sent.Release();
        Assert.That(sent.Data.ToArray(), Is.EqualTo(caller), "a frame wrapping the caller's memory owns nothing");

        var received = DataFrameWire.Deserialize(new StreamFrame { Data = ByteString.CopyFrom(caller) }.ToByteArray());
        received.Release();
        received.Release();
        Assert.That(received.Data.IsEmpty, Is.True);
    }
}
