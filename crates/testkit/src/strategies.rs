//! One strategy per model type.

use std::net::IpAddr;

use privtel_model::{
    Application, Arch, BatchId, Binary, BinaryId, BinaryVerdict, Category, ConfigSample, CountryCode,
    CrashReport, CustomerId, DataCategory, Device, DeviceId, DeviceType, Digest, Domain, DomainId,
    DomainVerdict, DurationBucket, Event, EventBody, EventId, ExecutableFormat, Execution, ExperienceScore,
    FeatureUsage, Feedback, Finite, Generalised, Geohash, HashAlg, Interaction, IpPrefix, KeyId,
    LicenceSession, Login, OsFamily, OsInfo, Package, PackageManager, PerformanceSample, Personal,
    Privileges, Program, Pseudonym, Record, RecordBody, Reputation, Score, ThreatLevel, TimeBucket, TimeUnit,
    Timestamp, Treatment, User, UserId, VersionCheck, WebRequest,
};
use proptest::prelude::*;
use proptest::sample::select;
use time::Duration;

/// Text ids: the id alphabet, 1 to 64 characters.
const TEXT_ID: &str = "[A-Za-z0-9._:-]{1,64}";

/// A customer id.
pub fn customer_id() -> impl Strategy<Value = CustomerId> {
    TEXT_ID.prop_map(|s| CustomerId::new(s).expect("alphabet matches"))
}

/// A device id.
pub fn device_id() -> impl Strategy<Value = DeviceId> {
    TEXT_ID.prop_map(|s| DeviceId::new(s).expect("alphabet matches"))
}

/// A user id.
pub fn user_id() -> impl Strategy<Value = UserId> {
    TEXT_ID.prop_map(|s| UserId::new(s).expect("alphabet matches"))
}

/// An event id.
pub fn event_id() -> impl Strategy<Value = EventId> {
    any::<u128>().prop_map(EventId::from_u128)
}

/// A batch id.
pub fn batch_id() -> impl Strategy<Value = BatchId> {
    any::<u128>().prop_map(BatchId::from_u128)
}

/// A binary id.
pub fn binary_id() -> impl Strategy<Value = BinaryId> {
    any::<u128>().prop_map(BinaryId::from_u128)
}

/// A domain id.
pub fn domain_id() -> impl Strategy<Value = DomainId> {
    any::<u128>().prop_map(DomainId::from_u128)
}

/// An instant anywhere in the supported range (years -9999 to 9999).
pub fn timestamp() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        // Mostly recent instants, where real data lives...
        (1_500_000_000_000_000_000i128..2_000_000_000_000_000_000),
        // ...and the whole range, where formatting edge cases live.
        (-377_705_116_800_000_000_000i128..=253_402_300_799_999_999_999),
    ]
    .prop_map(|n| Timestamp::from_unix_nanos(n).expect("in range"))
}

/// A duration of either sign, up to about 30,000 years.
pub fn duration() -> impl Strategy<Value = Duration> {
    (-1_000_000_000_000i64..1_000_000_000_000, -999_999_999i32..=999_999_999)
        .prop_map(|(s, n)| Duration::new(s, n))
}

/// A non-negative duration up to a day, as measured durations are.
pub fn measured_duration() -> impl Strategy<Value = Duration> {
    (0i64..86_400_000_000_000).prop_map(Duration::nanoseconds)
}

/// A 256-bit digest.
pub fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest::from_bytes)
}

/// A hash algorithm.
pub fn hash_alg() -> impl Strategy<Value = HashAlg> {
    select(vec![HashAlg::Sha256, HashAlg::Blake3])
}

/// A canonical domain name of 1 to 4 labels.
pub fn domain() -> impl Strategy<Value = Domain> {
    (prop::collection::vec("[a-z0-9][a-z0-9-]{0,14}", 0..3), "[a-z][a-z0-9]{0,9}").prop_map(
        |(mut labels, tld)| {
            labels.push(tld);
            Domain::new(labels.join(".")).expect("labels are canonical")
        },
    )
}

/// An assigned ISO 3166-1 alpha-2 country code.
pub fn country_code() -> impl Strategy<Value = CountryCode> {
    select(CountryCode::all().collect::<Vec<_>>())
}

/// A geohash of 1 to 12 characters.
pub fn geohash() -> impl Strategy<Value = Geohash> {
    "[0-9b-hjkmnp-z]{1,12}".prop_map(|s| Geohash::new(&s).expect("alphabet matches"))
}

/// A category label.
pub fn category() -> impl Strategy<Value = Category> {
    "[a-z][a-z ]{0,20}[a-z]".prop_map(|s| Category::new(s).expect("valid label"))
}

/// A score, 0 to 100.
pub fn score() -> impl Strategy<Value = Score> {
    (0u8..=100).prop_map(|v| Score::new(v).expect("in range"))
}

/// A program.
pub fn program() -> impl Strategy<Value = Program> {
    select(Program::ALL.to_vec())
}

/// A treatment.
pub fn treatment() -> impl Strategy<Value = Treatment> {
    select(Treatment::ALL.to_vec())
}

/// A data category.
pub fn data_category() -> impl Strategy<Value = DataCategory> {
    select(DataCategory::ALL.to_vec())
}

/// A pseudonymisation key id.
pub fn key_id() -> impl Strategy<Value = KeyId> {
    any::<u32>().prop_map(KeyId::new)
}

/// A pseudonym.
pub fn pseudonym() -> impl Strategy<Value = Pseudonym> {
    (key_id(), any::<[u8; 16]>()).prop_map(|(k, t)| Pseudonym::new(k, t))
}

/// An IP prefix of either family.
pub fn ip_prefix() -> impl Strategy<Value = IpPrefix> {
    (any::<IpAddr>(), 0u8..=128).prop_map(|(ip, len)| {
        let len = if ip.is_ipv4() { len % 33 } else { len };
        IpPrefix::new(ip, len).expect("length fits the family")
    })
}

/// A time unit.
pub fn time_unit() -> impl Strategy<Value = TimeUnit> {
    select(vec![TimeUnit::Minute, TimeUnit::Hour, TimeUnit::Day])
}

/// A time bucket.
pub fn time_bucket() -> impl Strategy<Value = TimeBucket> {
    // Stay a day inside the range so truncation cannot leave it.
    (-377_705_030_400i64..253_402_214_400, time_unit())
        .prop_map(|(s, u)| TimeBucket::containing(Timestamp::from_unix_seconds(s).expect("in range"), u))
}

/// A duration bucket.
pub fn duration_bucket() -> impl Strategy<Value = DurationBucket> {
    (0i64..1_000_000, prop::option::of(1i64..1_000_000)).prop_map(|(lo, width)| {
        let lo = Duration::milliseconds(lo);
        DurationBucket::new(lo, width.map(|w| lo + Duration::milliseconds(w))).expect("ordered")
    })
}

/// Any generalised value.
pub fn generalised() -> impl Strategy<Value = Generalised> {
    prop_oneof![
        ip_prefix().prop_map(Generalised::IpPrefix),
        time_bucket().prop_map(Generalised::Time),
        duration_bucket().prop_map(Generalised::Duration),
        domain().prop_map(Generalised::Domain),
        geohash().prop_map(Generalised::Geohash),
        any::<String>().prop_map(Generalised::Text),
    ]
}

/// A personal value of type `T`, in any of the four forms.
pub fn personal<T: std::fmt::Debug + Clone>(
    value: impl Strategy<Value = T>,
) -> impl Strategy<Value = Personal<T>> {
    prop_oneof![
        3 => value.prop_map(Personal::Clear),
        1 => pseudonym().prop_map(Personal::Pseudonym),
        1 => generalised().prop_map(Personal::Generalised),
        1 => Just(Personal::Withheld),
    ]
}

/// Personal text: any Unicode, including control characters.
pub fn personal_text() -> impl Strategy<Value = Personal<String>> {
    personal(any::<String>())
}

/// Short printable text for non-personal labels (product names, versions).
pub fn label_text() -> impl Strategy<Value = String> {
    "[[:print:]]{0,24}"
}

/// An OS family.
pub fn os_family() -> impl Strategy<Value = OsFamily> {
    select(vec![
        OsFamily::Windows,
        OsFamily::MacOs,
        OsFamily::Linux,
        OsFamily::Ios,
        OsFamily::Android,
        OsFamily::Other,
    ])
}

/// An operating system.
pub fn os_info() -> impl Strategy<Value = OsInfo> {
    (os_family(), label_text(), prop::option::of(label_text())).prop_map(|(family, version, build)| OsInfo {
        family,
        version,
        build,
    })
}

/// A device type.
pub fn device_type() -> impl Strategy<Value = DeviceType> {
    select(vec![
        DeviceType::Desktop,
        DeviceType::Laptop,
        DeviceType::Server,
        DeviceType::Virtual,
        DeviceType::Mobile,
        DeviceType::Other,
    ])
}

/// A device.
pub fn device() -> BoxedStrategy<Device> {
    (
        device_id(),
        personal_text(),
        os_info(),
        device_type(),
        label_text(),
        prop::option::of(label_text()),
        personal(any::<IpAddr>()),
        timestamp(),
    )
        .prop_map(|(id, name, os, device_type, cpu, gpu, ip, last_seen)| Device {
            id,
            name,
            os,
            device_type,
            cpu,
            gpu,
            ip,
            last_seen,
        })
        .boxed()
}

/// A user.
pub fn user() -> BoxedStrategy<User> {
    (user_id(), prop::collection::vec(personal_text(), 7))
        .prop_map(|(id, mut v)| {
            let mut next = || v.pop().unwrap_or_default();
            User {
                id,
                username: next(),
                upn: next(),
                first_name: next(),
                last_name: next(),
                job_title: next(),
                email: next(),
                phone: next(),
            }
        })
        .boxed()
}

/// Account privileges.
pub fn privileges() -> impl Strategy<Value = Privileges> {
    select(vec![Privileges::Guest, Privileges::Standard, Privileges::Administrator, Privileges::System])
}

/// A CPU architecture.
pub fn arch() -> impl Strategy<Value = Arch> {
    prop_oneof![
        select(vec![
            Arch::X86,
            Arch::X86_64,
            Arch::Arm,
            Arch::Aarch64,
            Arch::RiscV64,
            Arch::PowerPc64,
            Arch::S390x,
            Arch::LoongArch64,
        ]),
        any::<u32>().prop_map(Arch::Other),
    ]
}

/// An executable format.
pub fn executable_format() -> impl Strategy<Value = ExecutableFormat> {
    prop_oneof![
        arch().prop_map(|arch| ExecutableFormat::Elf { arch }),
        arch().prop_map(|arch| ExecutableFormat::Pe { arch }),
        arch().prop_map(|arch| ExecutableFormat::MachO { arch }),
        prop::collection::vec(arch(), 0..4).prop_map(|arches| ExecutableFormat::MachOUniversal { arches }),
        label_text().prop_map(|interpreter| ExecutableFormat::Script { interpreter }),
    ]
}

/// A binary.
pub fn binary() -> BoxedStrategy<Binary> {
    (
        digest(),
        prop::option::of(digest()),
        personal_text(),
        personal_text(),
        prop::option::of(label_text()),
        prop::option::of(label_text()),
        any::<u64>(),
        prop::option::of(executable_format()),
    )
        .prop_map(|(sha256, blake3, file_name, path, version, publisher, size, format)| Binary {
            sha256,
            blake3,
            file_name,
            path,
            version,
            publisher,
            size,
            format,
        })
        .boxed()
}

/// An application.
pub fn application() -> impl Strategy<Value = Application> {
    (label_text(), label_text(), prop::option::of(label_text()), prop::option::of(category()))
        .prop_map(|(name, version, publisher, category)| Application { name, version, publisher, category })
}

/// A package manager.
pub fn package_manager() -> impl Strategy<Value = PackageManager> {
    select(vec![
        PackageManager::Apt,
        PackageManager::Rpm,
        PackageManager::Msi,
        PackageManager::Msix,
        PackageManager::Homebrew,
        PackageManager::Snap,
        PackageManager::Flatpak,
        PackageManager::Other,
    ])
}

/// A package.
pub fn package() -> impl Strategy<Value = Package> {
    (label_text(), label_text(), package_manager(), prop::option::of(timestamp()))
        .prop_map(|(name, version, manager, installed_at)| Package { name, version, manager, installed_at })
}

/// A threat level, including unknown.
pub fn threat_level() -> impl Strategy<Value = ThreatLevel> {
    select(ThreatLevel::ALL.to_vec())
}

/// A reputation, including unknown.
pub fn reputation() -> impl Strategy<Value = Reputation> {
    select(Reputation::ALL.to_vec())
}

/// A binary verdict.
pub fn binary_verdict() -> impl Strategy<Value = BinaryVerdict> {
    (digest(), threat_level(), prop::option::of(category()))
        .prop_map(|(sha256, threat, category)| BinaryVerdict { sha256, threat, category })
}

/// A domain verdict.
pub fn domain_verdict() -> impl Strategy<Value = DomainVerdict> {
    (domain(), reputation(), prop::option::of(category()), prop::option::of(country_code())).prop_map(
        |(domain, reputation, category, hosting_country)| DomainVerdict {
            domain,
            reputation,
            category,
            hosting_country,
        },
    )
}

/// A binary execution.
pub fn binary_execution() -> BoxedStrategy<Execution> {
    (digest(), personal_text(), personal_text(), personal(timestamp()), personal(measured_duration()))
        .prop_map(|(sha256, username, path, start, duration)| Execution {
            sha256,
            username,
            path,
            start,
            duration,
        })
        .boxed()
}

/// A web request.
pub fn web_request() -> BoxedStrategy<WebRequest> {
    (
        personal_text(),
        personal_text(),
        personal(any::<IpAddr>()),
        any::<u16>(),
        personal(measured_duration()),
        any::<u32>(),
    )
        .prop_map(|(url, host, destination_ip, destination_port, page_load, visit_count)| WebRequest {
            url,
            host,
            destination_ip,
            destination_port,
            page_load,
            visit_count,
        })
        .boxed()
}

/// A login.
pub fn login() -> impl Strategy<Value = Login> {
    (personal(timestamp()), personal(measured_duration()), personal(privileges()))
        .prop_map(|(time, duration, privileges)| Login { time, duration, privileges })
}

/// A licence session.
pub fn licence_session() -> BoxedStrategy<LicenceSession> {
    (
        personal_text(),
        personal(timestamp()),
        personal(timestamp()),
        personal_text(),
        os_info(),
        personal(geohash()),
    )
        .prop_map(|(email, start, end, device_fingerprint, os, geohash)| LicenceSession {
            email,
            start,
            end,
            device_fingerprint,
            os,
            geohash,
        })
        .boxed()
}

/// An interaction with a web application: any canonical host, any action
/// text (a policy defines only some), any counts.
pub fn interaction() -> BoxedStrategy<Interaction> {
    (domain(), label_text(), any::<u32>(), any::<u32>(), personal(measured_duration()))
        .prop_map(|(application, action, keys, clicks, duration)| Interaction {
            application,
            action,
            keys,
            clicks,
            duration,
        })
        .boxed()
}

/// An event body of any kind.
pub fn event_body() -> BoxedStrategy<EventBody> {
    prop_oneof![
        binary_execution().prop_map(EventBody::Execution),
        web_request().prop_map(EventBody::WebRequest),
        login().prop_map(EventBody::Login),
        (label_text(), label_text(), personal_text()).prop_map(|(product, version, message)| {
            EventBody::CrashReport(CrashReport { product, version, message })
        }),
        (label_text(), label_text(), any::<u32>()).prop_map(|(product, feature, count)| {
            EventBody::FeatureUsage(FeatureUsage { product, feature, count })
        }),
        (label_text(), label_text(), label_text())
            .prop_map(|(product, key, value)| EventBody::Configuration(ConfigSample { product, key, value })),
        (label_text(), label_text(), -1e12f64..1e12, label_text()).prop_map(
            |(product, metric, value, unit)| {
                EventBody::Performance(PerformanceSample {
                    product,
                    metric,
                    value: Finite::new(value).expect("finite"),
                    unit,
                })
            }
        ),
        (label_text(), score(), personal_text())
            .prop_map(|(product, score, text)| EventBody::Feedback(Feedback { product, score, text })),
        licence_session().prop_map(EventBody::LicenceSession),
        (label_text(), label_text(), label_text()).prop_map(|(product, current_version, channel)| {
            EventBody::VersionCheck(VersionCheck { product, current_version, channel })
        }),
        (score(), measured_duration())
            .prop_map(|(score, period)| EventBody::ExperienceScore(ExperienceScore { score, period })),
        interaction().prop_map(EventBody::Interaction),
    ]
    .boxed()
}

/// An event.
pub fn event() -> BoxedStrategy<Event> {
    (event_id(), device_id(), prop::option::of(user_id()), timestamp(), event_body())
        .prop_map(|(id, device, user, recorded_at, body)| Event { id, device, user, recorded_at, body })
        .boxed()
}

/// A record body of any kind.
pub fn record_body() -> BoxedStrategy<RecordBody> {
    prop_oneof![
        1 => device().prop_map(RecordBody::Device),
        1 => user().prop_map(RecordBody::User),
        1 => binary().prop_map(RecordBody::Binary),
        1 => application().prop_map(RecordBody::Application),
        1 => package().prop_map(RecordBody::Package),
        1 => binary_verdict().prop_map(RecordBody::BinaryVerdict),
        1 => domain_verdict().prop_map(RecordBody::DomainVerdict),
        4 => event().prop_map(RecordBody::Event),
    ]
    .boxed()
}

/// A record of any kind for any program.
pub fn record() -> impl Strategy<Value = Record> {
    (program(), record_body()).prop_map(|(program, body)| Record { program, body })
}
