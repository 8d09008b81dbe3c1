using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using Google.Protobuf;
using Grpc.Core;
using SiteLink.Internal;
using SiteLink.Protocol.V1;

namespace SiteLink.Sdk.Tests;

/// <summary>
/// Fuzzing of the multiplexed data call's receiving side: the hand-written frame decoder (every input either is a frame
/// that round-trips, or is refused with an IOException) and the multiplexer's dispatch state machine (random frames,
/// reads, writes, closes and failures: bounded buffers and connections, and everything released after the call fails).
/// Seeded: the seed is printed, and SITELINK_FUZZ_SEED=&lt;seed&gt; replays a run.
/// </summary>
[TestFixture]
[Category("Multiplexing")]
public sealed class MuxFuzzTests
{
    private const int DecoderInputs = 1_000_000;
    private static readonly TimeSpan DecoderBudget = TimeSpan.FromSeconds(60);

    private static int Seed()
    {
        var seed = Environment.GetEnvironmentVariable("SITELINK_FUZZ_SEED") is { Length: > 0 } fixedSeed
            ? int.Parse(fixedSeed, CultureInfo.InvariantCulture)
            : Random.Shared.Next();
        TestContext.Out.WriteLine($"fuzz seed {seed} (SITELINK_FUZZ_SEED={seed} replays it)");
        return seed;
    }

    // ----------------------------------------------------------------------------------------------------------------
    // The decoder
    // ----------------------------------------------------------------------------------------------------------------

    [Test]
    public void Parse_AMillionHostileInputs_GivesAFrameThatRoundTrips_OrAnIOException()
    {
        var seed = Seed();
        var random = new Random(seed);
        var corpus = Enumerable.Range(0, 512).Select(_ => DataFrame.ToArray(RandomFrame(random))).ToList();
        var failures = new List<string>();
        long parsed = 0, refusedIo = 0, refusedProtobuf = 0;
        var watch = Stopwatch.StartNew();
        var inputs = 0;
        for (; inputs < DecoderInputs && failures.Count < 10; inputs++)
        {
            var input = Mutate(random, corpus);
            var segments = random.Next(8) == 0 ? random.Next(1, 9) : 0;
            DataFrame frame;
            try
            {
                frame = DataFrame.Parse(segments > 0 ? Segmented(input, segments) : new ReadOnlySequence<byte>(input));
            }
            catch (InvalidProtocolBufferException)
            {
                refusedProtobuf++;
                continue;
            }
            catch (IOException)
            {
                refusedIo++;
                continue;
            }
#pragma warning disable CA1031 // Any other exception is the finding.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                failures.Add($"input #{inputs} {Convert.ToHexString(input)} (segments {segments}): {ex.GetType().FullName}: {ex.Message}");
                continue;
            }

            parsed++;
            if (RoundTripFailure(frame) is { } failure)
            {
                failures.Add($"input #{inputs} {Convert.ToHexString(input)}: {failure}");
            }

            frame.Release();
            if (random.Next(64) == 0 && input.Length < 4096)
            {
                // Inputs that parse breed further mutations (repeated and unknown fields accumulate).
                corpus[random.Next(corpus.Count)] = input;
            }
        }

        watch.Stop();
        TestContext.Out.WriteLine($"{inputs:N0} inputs in {watch.Elapsed.TotalSeconds:F1} s: {parsed:N0} frames, {refusedIo:N0} IOException, {refusedProtobuf:N0} InvalidProtocolBufferException");
        Assert.Multiple(() =>
        {
            Assert.That(failures, Is.Empty, $"seed {seed}: inputs that neither parsed to a round-tripping frame nor failed with an IOException");
            Assert.That(inputs, Is.EqualTo(DecoderInputs));
            Assert.That(watch.Elapsed, Is.LessThan(DecoderBudget), "a million inputs within a minute");
            Assert.That(parsed, Is.GreaterThan(DecoderInputs / 20), "the mutations still reach the decoder's accepting paths");
            Assert.That(refusedIo + refusedProtobuf, Is.GreaterThan(DecoderInputs / 20), "and its refusing ones");
        });
    }

    /// <summary>
    /// The decoder must read what protobuf's generated parser reads: where both accept an input, the fields must be equal,
    /// and the decoder must accept nothing protobuf refuses (a stricter decoder is fine: it only ends a call).
    /// </summary>
    [Test]
    public void Parse_AgreesWithProtobufsGeneratedParser()
    {
        var seed = Seed();
        var random = new Random(seed);
        var corpus = Enumerable.Range(0, 512).Select(_ => DataFrame.ToArray(RandomFrame(random))).ToList();
        var disagreements = new List<string>();
        for (var i = 0; i < 200_000 && disagreements.Count < 10; i++)
        {
            var input = Mutate(random, corpus);
            DataFrame? ours = null;
            StreamFrame? theirs = null;
            string? ourError = null, theirError = null;
            try
            {
                ours = DataFrame.Parse(new ReadOnlySequence<byte>(input));
            }
            catch (IOException ex)
            {
                ourError = ex.Message;
            }

            try
            {
                theirs = StreamFrame.Parser.ParseFrom(input);
            }
            catch (InvalidProtocolBufferException ex)
            {
                theirError = ex.Message;
            }
#pragma warning disable CA1031 // Protobuf's own parser failing otherwise is worth knowing: DataFrame uses it for open and reset.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                // (Google.Protobuf throws ArgumentOutOfRangeException or IndexOutOfRangeException on some nested lengths
                // near int.MaxValue; DataFrame refuses those with the outer length check before protobuf sees them.)
                if (ours is not null)
                {
                    disagreements.Add($"{Convert.ToHexString(input)}: protobuf's generated parser threw {ex.GetType().Name}: {ex.Message}; DataFrame accepted it ({Describe(ours)})");
                }

                ours?.Release();
                continue;
            }

            if (ours is not null && theirs is null)
            {
                disagreements.Add($"{Convert.ToHexString(input)}: DataFrame accepts what protobuf refuses ({theirError})");
            }
            else if (ours is not null && theirs is not null && Differs(ours, theirs) is { } field)
            {
                disagreements.Add($"{Convert.ToHexString(input)}: both accept, {field} differs");
            }

            ours?.Release();
            _ = ourError;
        }

        Assert.That(disagreements, Is.Empty, $"seed {seed}: inputs the two decoders read differently");
    }

    /// <summary>Known shapes that a decoder commonly gets wrong, each checked against protobuf's parser.</summary>
    [TestCase("08FFFFFFFFFFFFFFFFFF01", TestName = "Parse_Field1AsATenByteVarint")]
    [TestCase("0A8080808010", TestName = "Parse_DataLengthOf2Pow32")]
    [TestCase("0AFFFFFFFF0F", TestName = "Parse_DataLengthOfUInt32Max")]
    [TestCase("0AFFFFFFFFFFFFFFFF7F", TestName = "Parse_DataLengthOfUInt64Max")]
    [TestCase("0A8080808008", TestName = "Parse_DataLengthOf2Pow31")]
    [TestCase("320208011A00", TestName = "Parse_ResetThenEmptyOpen")]
    [TestCase("3A0208011A00", TestName = "Parse_WindowAsLengthDelimited")]
    [TestCase("20FFFFFFFFFFFFFFFFFF01", TestName = "Parse_ConnectionIdOf2Pow64Minus1")]
    [TestCase("20FFFFFFFFFFFFFFFFFF7F", TestName = "Parse_ConnectionIdVarintOverflowing64Bits")]
    [TestCase("38FFFFFFFFFFFFFFFFFF01", TestName = "Parse_WindowVarintOf64Bits")]
    [TestCase("0B0C", TestName = "Parse_EmptyGroupOfField1")]
    [TestCase("8A80808080100100", TestName = "Parse_TagOf2Pow32PlusField1")]
    [TestCase("1A051A03E282AC", TestName = "Parse_OpenWithEuroSign")]
    [TestCase("1A030A01FF", TestName = "Parse_OpenWithInvalidUtf8")]
    [TestCase("3207080F1203C0AF00", TestName = "Parse_ResetWithOverlongUtf8")]
    [TestCase("1A061AFFFFFFFF07", TestName = "Parse_OpenHoldingAStringOfLength2Pow31Minus1")]
    [TestCase("1A060AFFFFFFFF0F", TestName = "Parse_OpenHoldingAStringOfLength2Pow32Minus1")]
    [TestCase("1A060A8080808008", TestName = "Parse_OpenHoldingAStringOfLength2Pow31")]
    [TestCase("320612FFFFFFFF07", TestName = "Parse_ResetHoldingAStringOfLength2Pow31Minus1")]
    [TestCase("1A063AFFFFFFFF07", TestName = "Parse_OpenHoldingAnUnknownFieldOfLength2Pow31Minus1")]
    [TestCase("1A020B0C", TestName = "Parse_OpenHoldingAGroup")]
    [TestCase("1A010C", TestName = "Parse_OpenHoldingAnEndGroupTag")]
    [TestCase("1000", TestName = "Parse_HalfCloseFalseExplicit")]
    [TestCase("10FF01", TestName = "Parse_HalfCloseOf255")]
    public void Parse_EdgeCase_MatchesProtobufOrIsRefused(string hex)
    {
        var input = Convert.FromHexString(hex);
        DataFrame? ours = null;
        Exception? ourError = null;
        try
        {
            ours = DataFrame.Parse(new ReadOnlySequence<byte>(input));
        }
#pragma warning disable CA1031 // Classified below.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            ourError = ex;
        }

        StreamFrame? theirs = null;
        try
        {
            theirs = StreamFrame.Parser.ParseFrom(input);
        }
        catch (InvalidProtocolBufferException)
        {
        }

        TestContext.Out.WriteLine($"DataFrame: {(ours is null ? ourError!.GetType().Name + ": " + ourError.Message : Describe(ours))}; protobuf: {theirs?.ToString() ?? "refused"}");
        if (ourError is not null)
        {
            Assert.That(ourError, Is.InstanceOf<IOException>(), "a refusal is an IOException");
            return;
        }

        Assert.Multiple(() =>
        {
            Assert.That(theirs, Is.Not.Null, "DataFrame accepts what protobuf refuses");
            Assert.That(theirs is null ? null : Differs(ours!, theirs), Is.Null, "the fields protobuf reads");
            Assert.That(RoundTripFailure(ours!), Is.Null);
        });
        ours!.Release();
    }

    private static string Describe(DataFrame f) =>
        $"data {f.Data.Length} B, half_close {f.HalfClose}, open {f.Open}, id {f.ConnectionId}, close {f.Close}, reset {f.Reset}, window {f.Window}";

    private static string? RoundTripFailure(DataFrame frame)
    {
        byte[] bytes;
        DataFrame again;
        try
        {
            bytes = DataFrame.ToArray(frame);
            again = DataFrame.Parse(new ReadOnlySequence<byte>(bytes));
        }
#pragma warning disable CA1031 // Reported as the failure.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            return $"re-encoding failed: {ex.GetType().Name}: {ex.Message} ({Describe(frame)})";
        }

        try
        {
            if (Differs(frame, again) is { } field)
            {
                return $"{field} differs after ToArray/Parse ({Describe(frame)} vs {Describe(again)})";
            }

            if (!DataFrame.ToArray(again).AsSpan().SequenceEqual(bytes))
            {
                return "the re-encoding is not stable";
            }

            var theirs = StreamFrame.Parser.ParseFrom(bytes);
            return Differs(frame, theirs) is { } protobufField ? $"protobuf reads the re-encoding's {protobufField} differently" : null;
        }
        finally
        {
            again.Release();
        }
    }

    private static string? Differs(DataFrame a, DataFrame b) =>
        !a.Data.Span.SequenceEqual(b.Data.Span) ? "data"
        : a.HalfClose != b.HalfClose ? "half_close"
        : !Equals(a.Open, b.Open) ? "open"
        : a.ConnectionId != b.ConnectionId ? "connection_id"
        : a.Close != b.Close ? "close"
        : !Equals(a.Reset, b.Reset) ? "reset"
        : a.Window != b.Window ? "window"
        : null;

    private static string? Differs(DataFrame a, StreamFrame b) =>
        !a.Data.Span.SequenceEqual(b.Data.Span) ? "data"
        : a.HalfClose != b.HalfClose ? "half_close"
        : !Equals(a.Open, b.Open) ? "open"
        : a.ConnectionId != b.ConnectionId ? "connection_id"
        : a.Close != b.Close ? "close"
        : !Equals(a.Reset, b.Reset) ? "reset"
        : a.Window != b.Window ? "window"
        : null;

    private static ReadOnlySequence<byte> Segmented(byte[] input, int segmentSize) =>
        new DataFrameWire.SegmentedDeserializationContext(input, segmentSize).PayloadAsReadOnlySequence();

    internal static DataFrame RandomFrame(Random random)
    {
        var frame = new DataFrame();
        var length = random.Next(10) switch
        {
            < 3 => 0,
            < 8 => random.Next(1, 64),
            < 9 => random.Next(64, 2048),
            _ => random.Next(2048, 20_000),
        };
        if (length > 0)
        {
            var data = new byte[length];
            random.NextBytes(data);
            frame.WithOwnedCopy(data);
        }

        frame.HalfClose = random.Next(4) == 0;
        frame.Close = random.Next(6) == 0;
        frame.ConnectionId = random.Next(4) switch
        {
            0 => 0,
            1 => (ulong)random.Next(1, 200),
            2 => (ulong)random.NextInt64(),
            _ => ulong.MaxValue - (ulong)random.Next(3),
        };
        frame.Window = random.Next(3) switch
        {
            0 => 0,
            1 => (uint)random.Next(1, 1 << 20),
            _ => uint.MaxValue - (uint)random.Next(3),
        };
        if (random.Next(5) == 0)
        {
            frame.Open = new OpenStream
            {
                StreamId = RandomText(random),
                BindId = RandomText(random),
                EndpointName = RandomText(random),
                ClientAddress = RandomText(random),
                Sni = RandomText(random),
            };
        }

        if (random.Next(6) == 0)
        {
            frame.Reset = new StreamReset { Code = random.Next(2) == 0 ? (uint)random.Next(0, 20) : (uint)random.NextInt64(0, uint.MaxValue), Message = RandomText(random) };
        }

        return frame;
    }

    private static string RandomText(Random random) => random.Next(4) switch
    {
        0 => "",
        1 => "s_" + random.Next().ToString(CultureInfo.InvariantCulture),
        2 => new string((char)random.Next(0x20, 0x7F), random.Next(1, 80)),
        _ => string.Concat(Enumerable.Range(0, random.Next(1, 12)).Select(_ => (char)random.Next(0, 0xD7FF))),
    };

    private static readonly ulong[] HugeLengths =
    [
        (1UL << 31) - 1, 1UL << 31, (1UL << 32) - 1, 1UL << 32, (1UL << 35) + 3, long.MaxValue, ulong.MaxValue, 1UL << 63,
    ];

    internal static byte[] Mutate(Random random, List<byte[]> corpus)
    {
        var input = corpus[random.Next(corpus.Count)];
        var rounds = random.Next(4) == 0 ? random.Next(2, 5) : 1;
        for (var round = 0; round < rounds; round++)
        {
            input = MutateOnce(random, input, corpus);
        }

        return input;
    }

    private static byte[] MutateOnce(Random random, byte[] input, List<byte[]> corpus)
    {
        var bytes = new List<byte>(input);
        switch (random.Next(14))
        {
            case 0:
                // Random bytes.
                var noise = new byte[random.Next(0, 48)];
                random.NextBytes(noise);
                return noise;
            case 1:
                // Bit flips.
                for (var i = random.Next(1, 4); i > 0 && bytes.Count > 0; i--)
                {
                    var at = random.Next(bytes.Count);
                    bytes[at] ^= (byte)(1 << random.Next(8));
                }

                break;
            case 2:
                // Overwritten bytes, biased towards interesting values.
                for (var i = random.Next(1, 3); i > 0 && bytes.Count > 0; i--)
                {
                    bytes[random.Next(bytes.Count)] = random.Next(3) switch { 0 => 0xFF, 1 => 0x80, _ => (byte)random.Next(256) };
                }

                break;
            case 3:
                // Truncation.
                return input.AsSpan(0, input.Length == 0 ? 0 : random.Next(input.Length)).ToArray();
            case 4:
                // Random bytes inserted.
                var insert = new byte[random.Next(1, 6)];
                random.NextBytes(insert);
                bytes.InsertRange(random.Next(bytes.Count + 1), insert);
                break;
            case 5:
                // Two frames in one message: every field repeated (scalars replace, messages merge).
                bytes.AddRange(corpus[random.Next(corpus.Count)]);
                break;
            case 6:
                // A length-delimited field of a huge length.
                var hugeField = random.Next(3) switch { 0 => 1, 1 => random.Next(1, 8), _ => random.Next(8, 1000) };
                var huge = random.Next(2) == 0 ? HugeLengths[random.Next(HugeLengths.Length)] : (ulong)(input.Length + random.Next(1, 10));
                var field = new List<byte>();
                WriteVarint(field, ((ulong)hugeField << 3) | 2);
                WriteVarint(field, huge);
                if (random.Next(2) == 0)
                {
                    bytes.InsertRange(0, field);
                }
                else
                {
                    bytes.AddRange(field);
                }

                break;
            case 7:
                // An unknown field of any wire type, with or without a valid body.
                var unknown = new List<byte>();
                var number = random.Next(3) switch { 0 => (ulong)random.Next(8, 16), 1 => (ulong)random.Next(16, 1 << 29), _ => (ulong)random.NextInt64() };
                var wireType = random.Next(8);
                WriteVarint(unknown, (number << 3) | (uint)wireType);
                var body = new byte[wireType switch { 0 => random.Next(1, 11), 1 => 8, 5 => 4, _ => random.Next(0, 12) }];
                random.NextBytes(body);
                if (wireType == 0)
                {
                    body[^1] &= 0x7F;
                }
                else if (wireType == 2)
                {
                    WriteVarint(unknown, (ulong)body.Length);
                }

                unknown.AddRange(body);
                bytes.InsertRange(random.Next(2) == 0 ? 0 : bytes.Count, unknown);
                break;
            case 8:
                // An over-long varint (11 bytes) as tag or value.
                var overlong = Enumerable.Repeat((byte)0xFF, random.Next(10, 13)).Append((byte)0x01).ToArray();
                if (random.Next(2) == 0)
                {
                    bytes.Add((byte)((random.Next(1, 8) << 3) | 0));
                }

                bytes.AddRange(overlong);
                break;
            case 9:
                // A known field with the wrong wire type.
                var known = random.Next(1, 8);
                var wrong = random.Next(6);
                bytes.Add((byte)((known << 3) | wrong));
                var content = new byte[wrong switch { 0 => 1, 1 => 8, 2 => 1, 5 => 4, _ => 0 }];
                random.NextBytes(content);
                if (wrong == 0)
                {
                    content[0] &= 0x7F;
                }
                else if (wrong == 2)
                {
                    content[0] = 0;
                }

                bytes.AddRange(content);
                break;
            case 10:
                // An open or reset whose message is itself mutated.
                var inner = random.Next(2) == 0
                    ? new OpenStream { StreamId = RandomText(random), BindId = RandomText(random), Sni = RandomText(random) }.ToByteArray()
                    : new StreamReset { Code = (uint)random.Next(), Message = RandomText(random) }.ToByteArray();
                var mutatedInner = MutateOnce(random, inner, [inner]);
                bytes.Add(random.Next(2) == 0 ? (byte)((3 << 3) | 2) : (byte)((6 << 3) | 2));
                var innerField = new List<byte>();
                WriteVarint(innerField, (ulong)mutatedInner.Length);
                bytes.AddRange(innerField);
                bytes.AddRange(mutatedInner);
                break;
            case 11:
                // Field number 0, a huge field number, or a tag varint of more than 32 bits.
                var tag = new List<byte>();
                WriteVarint(tag, random.Next(3) switch
                {
                    0 => (ulong)random.Next(8),
                    1 => (1UL << 32) | (uint)(random.Next(1, 8) << 3) | (uint)random.Next(3),
                    _ => ((ulong)random.NextInt64() << 3) | 0,
                });
                tag.Add(0);
                bytes.InsertRange(random.Next(2) == 0 ? 0 : bytes.Count, tag);
                break;
            case 12:
                // A byte removed.
                if (bytes.Count > 0)
                {
                    bytes.RemoveAt(random.Next(bytes.Count));
                }

                break;
            default:
                // A fresh valid frame.
                return DataFrame.ToArray(RandomFrame(random));
        }

        return bytes.ToArray();
    }

    private static void WriteVarint(List<byte> bytes, ulong value)
    {
        while (value >= 0x80)
        {
            bytes.Add((byte)(value | 0x80));
            value >>= 7;
        }

        bytes.Add((byte)value);
    }

    // ----------------------------------------------------------------------------------------------------------------
    // The dispatch state machine
    // ----------------------------------------------------------------------------------------------------------------

    private static readonly MuxSettings FuzzSettings = new(ReceiveWindow: 4096, SendWindow: 4096, MaxFrameSize: 1024, BufferBudget: 8192, MaxConnections: 6);

    /// <summary>What one connection the agent accepted is doing: at most one read and one write at a time.</summary>
    private sealed class Tracked(MuxConnection connection)
    {
        public MuxConnection Connection { get; } = connection;

        public Task<bool>? Read { get; set; }

        public Task? Write { get; set; }

        public bool Disposed { get; set; }
    }

    [Test]
    public void Dispatch_RandomFrameSequences_KeepBuffersAndConnectionsBounded_AndFailReleasesEverything()
    {
        var seed = Seed();
        var random = new Random(seed);
        var failures = new List<string>();
        var watch = Stopwatch.StartNew();
        long steps = 0, frames = 0, episodes = 0, protocolEnds = 0;
        while (watch.Elapsed < TimeSpan.FromSeconds(20) && failures.Count < 10)
        {
            episodes++;
            var output = new MuxTestLink();
            var tracked = new List<Tracked>();
            var mux = new Multiplexer(output, FuzzSettings, opens: false)
            {
                Accepted = (connection, _) => tracked.Add(new Tracked(connection)),
                ProtocolError = _ => { },
            };
            ulong lastId = 0;
            var length = random.Next(1, 300);
            string? ended = null;
            for (var step = 0; step < length && ended is null; step++, steps++)
            {
                var where = $"seed {seed} episode {episodes} step {step}";
                try
                {
                    var action = random.Next(100);
                    if (action < 55)
                    {
                        frames++;
                        var frame = FuzzFrame(random, ref lastId);
                        if (frame is not null && !mux.Dispatch(frame))
                        {
                            protocolEnds++;
                            mux.Fail(new Status(StatusCode.InvalidArgument, "the peer broke the multiplexing protocol"));
                            ended = "protocol";
                        }
                    }
                    else if (action < 98 && tracked.Count > 0)
                    {
                        Act(random, tracked[random.Next(tracked.Count)], action);
                    }
                    else if (action >= 98)
                    {
                        mux.Fail(new Status(StatusCode.Unavailable, "fuzz"));
                        ended = "failed";
                    }
                }
#pragma warning disable CA1031 // Any exception out of the state machine is a finding.
                catch (Exception ex)
#pragma warning restore CA1031
                {
                    failures.Add($"{where}: {ex.GetType().FullName}: {ex.Message}\n{ex.StackTrace}");
                    ended = "exception";
                    break;
                }

                foreach (var t in tracked)
                {
                    CheckTask(t.Read, where, failures);
                    CheckTask(t.Write, where, failures);
                }

                if (mux.Count > FuzzSettings.MaxConnections)
                {
                    failures.Add($"{where}: {mux.Count} connections, over MaxConnections {FuzzSettings.MaxConnections}");
                }

                var buffered = mux.BufferedBytes;
                if (buffered < 0 || buffered > (long)FuzzSettings.ReceiveWindow * mux.Count)
                {
                    failures.Add($"{where}: BufferedBytes {buffered} with {mux.Count} connections of window {FuzzSettings.ReceiveWindow}");
                }

                foreach (var t in tracked.Where(t => !t.Disposed))
                {
                    if (t.Connection.Buffered > FuzzSettings.ReceiveWindow || t.Connection.Buffered < 0)
                    {
                        failures.Add($"{where}: connection {t.Connection.Id} holds {t.Connection.Buffered} bytes");
                    }
                }
            }

            if (ended != "exception")
            {
                if (ended is null)
                {
                    mux.Fail(new Status(StatusCode.Unavailable, "the episode ended"));
                }

                CheckReleased(mux, tracked, $"seed {seed} episode {episodes} (ended: {ended ?? "end of episode"})", failures);
            }
        }

        TestContext.Out.WriteLine($"{episodes:N0} episodes, {steps:N0} steps, {frames:N0} frames, {protocolEnds:N0} calls ended for a protocol violation, in {watch.Elapsed.TotalSeconds:F1} s");
        Assert.That(failures, Is.Empty, $"seed {seed}");
    }

    private static void Act(Random random, Tracked t, int action)
    {
        var connection = t.Connection;
        switch (action)
        {
            case < 75:
                // Read (one read at a time): the frame handed out is consumed at once.
                if (t.Read is null || t.Read.IsCompleted)
                {
                    if (t.Read is { IsCompletedSuccessfully: true, Result: true })
                    {
                        connection.Current.Release();
                    }

                    t.Read = connection.MoveNext(CancellationToken.None);
                }

                break;
            case < 85:
                if (t.Write is null || t.Write.IsCompleted)
                {
                    var data = new byte[random.Next(3) == 0 ? 0 : random.Next(1, 6000)];
                    var frame = DataFrame.ForData(data);
                    frame.HalfClose = random.Next(5) == 0;
                    t.Write = connection.WriteAsync(frame);
                }

                break;
            case < 90:
                _ = connection.FinishAsync(random.Next(2) == 0 ? null : new Status((StatusCode)random.Next(1, 17), "fuzz"));
                break;
            case < 94:
                connection.Dispose();
                t.Disposed = true;
                break;
            default:
                // A read that is cancelled.
                if (t.Read is null || t.Read.IsCompleted)
                {
                    using var cancelled = new CancellationTokenSource();
                    cancelled.Cancel();
                    t.Read = connection.MoveNext(cancelled.Token);
                }

                break;
        }
    }

    private static void CheckTask(Task? task, string where, List<string> failures)
    {
        if (task is { IsFaulted: true } && task.Exception!.InnerException is not (RpcException or InvalidOperationException))
        {
            failures.Add($"{where}: a connection's read or write failed with {task.Exception.InnerException!.GetType().FullName}: {task.Exception.InnerException.Message}");
        }
    }

    private static void CheckReleased(Multiplexer mux, List<Tracked> tracked, string where, List<string> failures)
    {
        if (!mux.IsOver || mux.Count != 0 || mux.BufferedBytes != 0)
        {
            failures.Add($"{where}: after Fail: IsOver {mux.IsOver}, {mux.Count} connections, {mux.BufferedBytes} bytes buffered");
        }

        var pending = tracked.SelectMany(t => new Task?[] { t.Read, t.Write }).Where(t => t is not null).Select(t => t!).ToArray();
        try
        {
            Task.WhenAll(pending).Wait(TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
            // Failures are expected; inspected below.
        }

        if (pending.Any(t => !t.IsCompleted))
        {
            failures.Add($"{where}: {pending.Count(t => !t.IsCompleted)} reads or writes still wait after the call failed");
        }

        foreach (var t in tracked)
        {
            CheckTask(t.Read, where, failures);
            CheckTask(t.Write, where, failures);
            if (t.Read is { IsCompletedSuccessfully: true, Result: true })
            {
                t.Connection.Current.Release();
            }

            // A fresh read after the failure ends at once (no frame is left to hand out).
            var after = t.Connection.MoveNext(CancellationToken.None);
            if (!after.IsCompleted)
            {
                failures.Add($"{where}: a read of connection {t.Connection.Id} waits after the call failed");
            }
            else if (after.IsCompletedSuccessfully && after.Result)
            {
                failures.Add($"{where}: connection {t.Connection.Id} still hands out a frame after the call failed");
            }
        }
    }

    /// <summary>A frame as a hostile relay might send it, through the codec (null when the mutation made it unparseable).</summary>
    private static DataFrame? FuzzFrame(Random random, ref ulong lastId)
    {
        var frame = new StreamFrame();
        var kind = random.Next(100);
        if (kind < 15)
        {
            // Open: mostly the next id, sometimes one used before.
            var id = random.Next(10) == 0 ? (ulong)random.Next(0, (int)Math.Min(lastId + 2, int.MaxValue)) : lastId + (ulong)random.Next(1, 3);
            lastId = Math.Max(lastId, id);
            frame.ConnectionId = id;
            frame.Open = new OpenStream { StreamId = "s" + id.ToString(CultureInfo.InvariantCulture), BindId = "b1", EndpointName = "db" };
        }
        else
        {
            frame.ConnectionId = random.Next(20) == 0 ? (ulong)random.NextInt64() : (ulong)random.Next(0, (int)Math.Min(lastId + 3, int.MaxValue));
        }

        if (random.Next(2) == 0)
        {
            var data = new byte[random.Next(10) == 0 ? random.Next(1000, 1100) : random.Next(1, 1024)];
            random.NextBytes(data);
            frame.Data = ByteString.CopyFrom(data);
        }

        frame.HalfClose = random.Next(8) == 0;
        frame.Close = random.Next(12) == 0;
        if (random.Next(4) == 0)
        {
            frame.Window = random.Next(4) == 0 ? uint.MaxValue : (uint)random.Next(1, 8192);
        }

        if (random.Next(15) == 0)
        {
            frame.Reset = new StreamReset { Code = (uint)random.Next(0, 20), Message = "fuzz" };
        }

        var bytes = frame.ToByteArray();
        if (random.Next(20) == 0)
        {
            bytes = MutateOnce(random, bytes, [bytes]);
        }

        try
        {
            return DataFrame.Parse(new ReadOnlySequence<byte>(bytes));
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>
    /// The same through <see cref="Multiplexer.RunAsync"/>: random (and sometimes garbage) messages on an in-memory call
    /// read by the real loop while consumers read, write and release connections concurrently; the loop never throws,
    /// always ends, and leaves nothing held.
    /// </summary>
    [Test]
    public async Task RunAsync_RandomCalls_NeverThrow_AndReleaseEverythingWhenTheCallEnds()
    {
        var seed = Seed();
        var random = new Random(seed);
        var failures = new List<string>();
        var watch = Stopwatch.StartNew();
        var calls = 0;
        while (watch.Elapsed < TimeSpan.FromSeconds(15) && failures.Count < 10)
        {
            calls++;
            var input = new MuxTestLink();
            var output = new MuxTestLink();
            var consumers = new List<Task>();
            var consumerRandom = new Random(random.Next());
            var mux = new Multiplexer(output, FuzzSettings, opens: false)
            {
                Accepted = (connection, _) =>
                {
                    var rng = new Random(consumerRandom.Next());
                    consumers.Add(Task.Run(() => ConsumeAsync(connection, rng)));
                },
            };
            using var stop = new CancellationTokenSource();
            var run = mux.RunAsync(input, stop.Token);
            ulong lastId = 0;
            var messages = random.Next(1, 400);
            for (var i = 0; i < messages; i++)
            {
                if (random.Next(200) == 0)
                {
                    var garbage = new byte[random.Next(1, 30)];
                    random.NextBytes(garbage);
                    input.InjectRaw(garbage);
                    continue;
                }

                var frame = FuzzFrame(random, ref lastId);
                if (frame is not null)
                {
                    input.InjectRaw(DataFrame.ToArray(frame));
                    frame.Release();
                }
            }

            switch (random.Next(3))
            {
                case 0:
                    input.Complete();
                    break;
                case 1:
                    input.Complete(new RpcException(new Status(StatusCode.Unavailable, "gone")));
                    break;
                default:
                    await stop.CancelAsync();
                    break;
            }

            try
            {
                await run.WaitAsync(TimeSpan.FromSeconds(10));
            }
#pragma warning disable CA1031 // Any exception out of RunAsync is a finding.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                failures.Add($"seed {seed} call {calls}: RunAsync threw {ex.GetType().FullName}: {ex.Message}");
                continue;
            }

            Task[] all;
            lock (consumers)
            {
                all = consumers.ToArray();
            }

            try
            {
                await Task.WhenAll(all).WaitAsync(TimeSpan.FromSeconds(10));
            }
            catch (TimeoutException)
            {
                failures.Add($"seed {seed} call {calls}: {all.Count(t => !t.IsCompleted)} connections' consumers still wait after the call ended");
            }
#pragma warning disable CA1031 // Reported.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                failures.Add($"seed {seed} call {calls}: a consumer failed with {ex.GetType().FullName}: {ex.Message}");
            }

            if (!mux.IsOver || mux.Count != 0 || mux.BufferedBytes != 0)
            {
                failures.Add($"seed {seed} call {calls}: after the call ended: IsOver {mux.IsOver}, {mux.Count} connections, {mux.BufferedBytes} bytes buffered");
            }
        }

        TestContext.Out.WriteLine($"{calls:N0} calls in {watch.Elapsed.TotalSeconds:F1} s");
        Assert.That(failures, Is.Empty, $"seed {seed}");
    }

    /// <summary>A connection's consumer: reads (sometimes slowly), writes, and releases it; returns once it ended.</summary>
    private static async Task ConsumeAsync(MuxConnection connection, Random random)
    {
        using (connection)
        {
            var writer = random.Next(3) == 0
                ? Task.Run(async () =>
                {
                    try
                    {
                        await connection.WriteAsync(DataFrame.ForData(new byte[random.Next(1, 10_000)]));
                        await connection.CompleteAsync();
                    }
                    catch (Exception ex) when (ex is RpcException or InvalidOperationException)
                    {
                        // The connection or call ended.
                    }
                })
                : Task.CompletedTask;
            try
            {
                var reads = random.Next(0, 50);
                for (var i = 0; i < reads && await connection.MoveNext(CancellationToken.None); i++)
                {
                    connection.Current.Release();
                    if (random.Next(4) == 0)
                    {
                        await Task.Yield();
                    }
                }

                if (random.Next(2) == 0)
                {
                    // Keeps reading until the end: the call's end must end this read.
                    while (await connection.MoveNext(CancellationToken.None))
                    {
                        connection.Current.Release();
                    }
                }
            }
            catch (RpcException)
            {
                // Reset, or the call failed.
            }

            await writer;
        }
    }
}
